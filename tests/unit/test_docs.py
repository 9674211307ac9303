"""The field reference is generated from the schema; it must not drift."""

from pathlib import Path

from dream.recipe.docs import render
from dream.recipe.schema import RECIPE


def test_reference_matches_schema() -> None:
    committed = (Path(__file__).resolve().parents[2] / "docs" / "recipe-reference.md").read_text()
    assert committed == render(), "run: python -m dream.recipe.docs > docs/recipe-reference.md"


def test_every_field_is_documented() -> None:
    def walk(schema: dict, path: str):  # type: ignore[no-untyped-def,type-arg]
        for name, rule in schema.items():
            assert rule.get("meta", {}).get("doc"), f"{path}{name} has no doc"
            inner = rule.get("schema")
            if rule.get("type") == "dict" and isinstance(inner, dict):
                walk(inner, f"{path}{name}.")
            elif isinstance(inner, dict) and inner.get("type") == "dict":
                walk(inner["schema"], f"{path}{name}[].")
    walk(RECIPE, "")
