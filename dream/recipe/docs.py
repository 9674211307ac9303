"""Render the recipe schema's documentation as Markdown: ``python -m dream.recipe.docs``.

docs/recipe-reference.md is this output; a test keeps the two in step.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from dream.recipe.schema import RECIPE

HEADER = """# Recipe reference

Generated from `dream/recipe/schema.py` by `python -m dream.recipe.docs`; do not edit by hand.
Paths are written the way errors show them (`layers[].files[].mode`). How imports merge is in
[recipes.md](recipes.md).

| field | type | default | meaning |
|---|---|---|---|
"""


def _type(rule: dict[str, Any]) -> str:
    kind = rule.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if "allowed" in rule and kind == "string":
        return " \\| ".join(f"`{v}`" for v in rule["allowed"])
    if kind == "list" and isinstance(rule.get("schema"), dict) and rule["schema"].get("type") != "dict":
        return f"list of {rule['schema'].get('type', 'any')}"
    return str(kind)


def _rows(schema: dict[str, Any], prefix: str) -> Iterator[str]:
    for name, rule in schema.items():
        path = f"{prefix}{name}"
        meta = rule.get("meta", {})
        default = json.dumps(meta["default"]) if "default" in meta else ("required" if rule.get("required") else "—")
        yield f"| `{path}` | {_type(rule)} | {default} | {meta.get('doc', '')} |"
        inner = rule.get("schema")
        values = rule.get("valuesrules")
        if rule.get("type") == "dict" and isinstance(inner, dict):
            yield from _rows(inner, path + ".")
        elif rule.get("type") == "dict" and isinstance(values, dict) and isinstance(values.get("schema"), dict):
            yield from _rows(values["schema"], path + ".<name>.")
        elif rule.get("type") == "list" and isinstance(inner, dict) and inner.get("type") == "dict":
            yield from _rows(inner["schema"], path + "[].")


def render() -> str:
    return HEADER + "\n".join(_rows(RECIPE, "")) + "\n"


if __name__ == "__main__":
    print(render(), end="")
