"""Pieces both schemas use (the recipe's in dream/recipe/schema.py, the services' in
dream/services/schema.py): field documentation, the text coercion, shared patterns."""

from __future__ import annotations

from typing import Any

ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
MODE_RE = r"^0?[0-7]{3,4}$"
SIGNAL_RE = r"^(SIG[A-Z0-9+-]+|\d+)$"


def doc(text: str, default: Any = None) -> dict[str, Any]:
    """A field's ``meta``: its documentation and the default the reference shows."""
    meta: dict[str, Any] = {"doc": text}
    if default is not None:
        meta["default"] = default
    return {"meta": meta}


def to_text(value: Any) -> Any:
    """Env and label values may be written as numbers or booleans; processes and images get text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value
