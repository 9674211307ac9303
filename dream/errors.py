"""One error type for everything a user can get wrong, always with a location.

A user mistake must print as one line, ``file:line: dotted.path: message``, and never as a
traceback; `DreamError` carries exactly those parts and `UserErrors` carries several at once so
that a recipe's problems are all reported in one run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a value came from: a file and a 1-based line (0 when the line is unknown)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class DreamError(Exception):
    """A mistake the user can fix; printed as one line, never as a traceback."""

    def __init__(self, message: str, location: Location | None = None, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.path = path

    def __str__(self) -> str:
        parts = [str(self.location)] if self.location else []
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class UserErrors(DreamError):
    """Several user mistakes found in one pass, reported together (one line each)."""

    def __init__(self, errors: list[DreamError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return self.message
