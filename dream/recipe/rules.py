"""Pieces both schemas use (the recipe's in dream/recipe/schema.py, the services' in
dream/recipe/services_schema.py): field documentation, the text coercion, shared patterns."""

from __future__ import annotations

from typing import Any

FORMS: dict[str, str] = {}


def form(regex: str, words: str) -> str:
    """A schema pattern with the words an error shows instead of it (``FORMS``): a user is
    told "must be an absolute path", never a regular expression."""
    FORMS[regex] = words
    return regex


ENV_NAME_RE = form(r"^[A-Za-z_][A-Za-z0-9_]*$", "a variable name: letters, digits and _, not starting with a digit")
MODE_RE = form(r"^0?[0-7]{3,4}$", 'an octal mode such as "0644" or "0755"')
SIGNAL_RE = form(r"^(SIG[A-Z0-9+-]+|\d+)$", "a signal name such as SIGTERM, or its number")
ABSOLUTE = form(r"^/.*", "an absolute path (starting with /)")
RELATIVE = form(r"^[^/].*", "a relative path (not starting with /)")


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
