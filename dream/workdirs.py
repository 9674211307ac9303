"""The directories dream writes to, named by the environment, checked before anything uses them.

``DREAM_STORE`` (the image store) and ``DREAM_CACHE`` (downloaded packages and wheels) are set by
people, so a wrong one is a user mistake: it must read as one line naming the variable and what
is wrong with the path, never as the ``NotADirectoryError`` traceback of whichever ``mkdir`` or
``open`` met it first. The check creates nothing: ``doit list`` with a bad setting leaves no
directory behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from dream.errors import DreamError

SETTINGS = ("DREAM_STORE", "DREAM_CACHE")


def label(setting: str, path: Path) -> str:
    """How errors name a directory: ``DREAM_STORE=/x`` when the variable set it, else its role."""
    what = "store" if setting == "DREAM_STORE" else "download cache"
    return f"{setting}={path}" if os.environ.get(setting, "").strip() else f"the {what} {path}"


def check_directory(setting: str, path: Path) -> None:
    """Raise a one-line `DreamError` unless ``path`` is, or can be made as, a writable directory."""
    path = Path(os.path.abspath(path))
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    named = label(setting, path)
    if existing == path:
        if not path.is_dir():
            raise DreamError(f"{named}: not a directory (it is a file); point {setting} at a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DreamError(f"{named}: the directory is not writable by this user")
        return
    if not existing.is_dir():
        raise DreamError(f"{named}: cannot create it: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DreamError(f"{named}: cannot create it: {existing} is not writable by this user")


def check_environment() -> None:
    """Check every directory setting that is set (the defaults are checked where they are used)."""
    for setting in SETTINGS:
        value = os.environ.get(setting, "").strip()
        if value:
            check_directory(setting, Path(value))
