"""The exception boundary of every doit task dream defines: one line, never a traceback.

doit prints a traceback for any exception a python-action, an ``uptodate`` check or a ``clean``
action raises. A user's mistake (`DreamError`) is already one line; the machine's state (a full
disk, a permission, a file that vanished: `OSError`) and dream's own bugs must be too, so each
such callable is wrapped once, here, when the task dicts are made (`guard_task`):

- `DreamError` → the task fails with its message;
- `OSError` → the task fails with ``<file>: <reason>`` (errno's words, e.g. "No space left on
  device"), plus a pointer to a log that holds the traceback;
- any other exception → ``internal error …``, the log's path, and a plea to report it.

Ctrl-C (KeyboardInterrupt) passes through: doit stops the run and `dream.project` prints it as
one line. An ``uptodate`` check that fails says "not up to date", so the action runs and reports.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from doit.exceptions import TaskFailed

from dream.errors import DreamError

LOG_DIR = Path(".dream") / "log"
KEPT_LOGS = 20  # the newest few are enough to report a bug; older ones are removed


def failure_line(exc: BaseException, where: str) -> str:
    """The one line for ``exc``; anything but a `DreamError` also leaves a log with details."""
    if isinstance(exc, DreamError):
        return str(exc)
    log = write_log(exc, where)
    pointer = f" (details in {log})" if log else ""
    if isinstance(exc, OSError):
        subject = exc.filename if exc.filename is not None else where
        reason = exc.strerror or type(exc).__name__
        return f"{subject}: {reason}{pointer}"
    message = " ".join(str(exc).split())[:300]
    return (f"internal error in {where}: {type(exc).__name__}: {message}{pointer}; "
            "please report it with that file")


def write_log(exc: BaseException, where: str) -> Path | None:
    """The traceback of ``exc`` in ``.dream/log/`` (written whole, or not at all); None when
    even that fails (a full disk): the one line is then all there is."""
    try:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        final = LOG_DIR / f"{stamp}-{os.getpid()}-{threading.get_ident() % 100000:05d}.log"  # parallel layers
        text = f"dream: {where}\n" + "".join(traceback.format_exception(exc))
        fd, temporary = tempfile.mkstemp(dir=LOG_DIR, prefix=".new-")
        try:
            with os.fdopen(fd, "w") as stream:
                stream.write(text)
            os.replace(temporary, final)
        except BaseException:
            os.unlink(temporary)
            raise
        for old in sorted(LOG_DIR.glob("*.log"))[:-KEPT_LOGS]:
            old.unlink(missing_ok=True)
        return final
    except OSError:
        return None


def action(function: Callable[..., Any], where: str) -> Callable[..., Any]:
    """``function`` as a doit python-action that fails with one line instead of raising.
    `functools.wraps` keeps its signature, which doit reads to pass params by name."""
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (this is the boundary: everything ends here)
            return TaskFailed(failure_line(exc, where))
    return guarded


class check:
    """``test`` as an ``uptodate`` check: a failing check means "run the task", whose action
    then reports the problem as one line. doit reads the signature through ``__wrapped__``
    (for its ``task``/``values`` arguments) and prints the repr in `doit info`."""

    def __init__(self, test: Callable[..., Any], where: str) -> None:
        self.__wrapped__, self.where = test, where

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.__wrapped__(*args, **kwargs)
        except Exception:  # noqa: BLE001
            return False

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


def guard_task(task: dict[str, Any], where: str) -> dict[str, Any]:
    """``task`` with every python callable in its actions and uptodate wrapped. (A clean
    action that fails must exit non-zero, which doit's clean does not do for a failed action:
    `dream.verbs.clean_action` exits itself, through `failure_line`.)"""
    guarded = dict(task)
    for field, wrap in (("actions", action), ("uptodate", check)):
        entries = task.get(field)
        if isinstance(entries, list):
            guarded[field] = [_wrap_entry(entry, wrap, where) for entry in entries]
    return guarded


def _wrap_entry(entry: Any, wrap: Callable[..., Any], where: str) -> Any:
    if isinstance(entry, tuple) and entry and callable(entry[0]):
        return (wrap(entry[0], where), *entry[1:])
    if callable(entry) and not isinstance(entry, type):
        return wrap(entry, where)
    return entry  # a shell command string, True/False/None: doit's own


def guard_creator(creator: Callable[[], Any], base: str) -> Callable[[], Any]:
    """A ``task_*`` creator whose tasks (a dict, or a generator of dicts) are all guarded."""
    @functools.wraps(creator)
    def guarded() -> Any:
        made = creator()
        if isinstance(made, dict):
            return guard_task(made, base)
        return (guard_task(task, f"{base}:{task.get('name', '')}") for task in made)
    return guarded
