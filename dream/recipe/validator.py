"""The recipe schema's cerberus validator (dream/recipe/schema.py builds it, once, on demand)."""

from __future__ import annotations

from typing import Any

import cerberus


class RecipeValidator(cerberus.Validator):
    """Cerberus with the one rule the recipe needs beyond the built-ins."""

    def _validate_exactly_one_of(self, constraint: list[str], field: str, value: Any) -> None:
        """Exactly one of the named keys must be present (a tagged union without `oneof`).

        The rule's arguments are validated against this schema:
        {'type': 'list'}
        """
        if not isinstance(value, dict):
            return
        present = [key for key in constraint if key in value]
        if len(present) != 1:
            got = ", ".join(present) if present else "none"
            self._error(field, f"needs exactly one of {', '.join(constraint)} (got {got})")
