"""What loading a recipe asked the filesystem, so that a cached load can be proven current.

A recipe's model is a function of dream's code and of the answers the filesystem gave while it
was loaded: each YAML file's text, and every path resolved (symlinks followed) or tested for
existence on the way (imports looked up in ``layers/`` and among the presets, ``src`` paths,
containment checks, ``config_files`` read into the model). The loader asks through the functions
here; while a `Recorder` is active each question and its answer are noted. Asking every
question again and getting the same answers means a fresh load would compute the same model
(dream/recipe/cache.py), without parsing YAML or running cerberus.

Answers are compared, never trusted: a file's text is noted by its sha256, a failure by its
type and message. Without an active recorder these are the plain ``pathlib`` calls.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable

Question = tuple[str, str, str]  # (operation, path, argument)
Answer = tuple[Any, ...]


class Recorder:
    """The questions asked during one load, each with its first answer; ``stable`` turns false
    when the same question got two answers (the tree changed under the load: cache nothing)."""

    def __init__(self) -> None:
        self.facts: dict[Question, Answer] = {}
        self.stable = True

    def __enter__(self) -> Recorder:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.reset(self._token)

    def note(self, question: Question, answer: Answer) -> None:
        known = self.facts.setdefault(question, answer)
        if known != answer:
            self.stable = False


_ACTIVE: ContextVar[Recorder | None] = ContextVar("dream_recipe_facts", default=None)


def _failure(exc: BaseException) -> Answer:
    return ("raised", type(exc).__name__, str(exc))


def ask(question: Question) -> Answer:
    """The filesystem's answer to ``question`` now (what `still_true` compares)."""
    operation, path, argument = question
    try:
        if operation == "resolve":
            return ("ok", str(Path(path).resolve()))
        if operation == "is_file":
            return ("ok", Path(path).is_file())
        if operation == "exists":
            return ("ok", Path(path).exists())
        if operation == "read_text":
            text = Path(path).read_text(encoding=argument or None)
            return ("ok", hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
        if operation == "read_bytes":
            return ("ok", hashlib.sha256(Path(path).read_bytes()).hexdigest())
    except (OSError, RuntimeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return _failure(exc)
    raise ValueError(f"unknown question {operation!r}")


def still_true(facts: dict[Question, Answer]) -> bool:
    """Every question gets the answer it got when the facts were noted."""
    return all(ask(question) == answer for question, answer in facts.items())


def _asked(question: Question, act: Callable[[], Any], answer: Callable[[Any], Any]) -> Any:
    recorder = _ACTIVE.get()
    if recorder is None:
        return act()
    try:
        result = act()
    except (OSError, RuntimeError, ValueError) as exc:
        recorder.note(question, _failure(exc))
        raise
    recorder.note(question, ("ok", answer(result)))
    return result


def resolve(path: Path) -> Path:
    """``path.resolve()``, noted."""
    return _asked(("resolve", str(path), ""), path.resolve, str)


def is_file(path: Path) -> bool:
    """``path.is_file()``, noted."""
    return _asked(("is_file", str(path), ""), path.is_file, bool)


def exists(path: Path) -> bool:
    """``path.exists()``, noted."""
    return _asked(("exists", str(path), ""), path.exists, bool)


def read_text(path: Path, encoding: str | None = None) -> str:
    """``path.read_text(encoding)``, noted by the sha256 of the text read."""
    return _asked(("read_text", str(path), encoding or ""),
                  lambda: path.read_text(encoding=encoding),
                  lambda text: hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())


def read_bytes(path: Path) -> bytes:
    """``path.read_bytes()``, noted by the sha256 of the bytes read."""
    return _asked(("read_bytes", str(path), ""), path.read_bytes, lambda data: hashlib.sha256(data).hexdigest())
