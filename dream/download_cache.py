"""The download cache (``$DREAM_CACHE``, default ``~/.cache/dream``): what builds fetched.

Wheels (``wheels/<sha256>/``) and Debian packages (``debs/``) are downloaded at build time, each
verified against the lock's sha256, and kept so that a rebuild of a layer costs no network. They
are only ever needed to *rebuild* a layer: the store keeps every built layer, so the cache can be
emptied at any time (``doit gc --cache``) and the next build that needs a file fetches it again.

Kept by ``gc --cache``: the wheels' member lists (``wheel-members/``, a few KB each, which keep a
relock free of network reads) and apt's package lists (``apt/``).

A download runs in a ``download-*`` scratch directory next to its destination and files move
into place only when verified; the downloader's own temporary files (``TMPDIR``) are inside it
too. Ctrl-C removes the scratch directory on the way out. A process killed outright leaves it
(its downloader dies with it, `die_with_parent`), and the next download in that directory
removes scratch directories older than `STALE_AFTER` (younger ones may belong to a download
running right now).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

DOWNLOADS = ("wheels", "debs")
STALE_AFTER = 3600.0  # seconds; longer than any one download run


def sweep_stale_downloads(directory: Path, older_than: float = STALE_AFTER) -> int:
    """Remove ``download-*`` scratch directories in ``directory`` untouched for ``older_than``
    seconds (left by a killed download); the number removed."""
    removed = 0
    deadline = time.time() - older_than
    for scratch in directory.glob("download-*"):
        try:
            if scratch.is_dir() and scratch.stat().st_mtime < deadline:
                shutil.rmtree(scratch, ignore_errors=True)
                removed += 1
        except OSError:
            continue  # removed by a concurrent sweep
    return removed


@dataclass(frozen=True)
class Reclaimed:
    files: int
    bytes: int


def clear_downloads(root: Path) -> Reclaimed:
    """Delete every downloaded wheel and deb (and any scratch directory) under ``root``.

    Each top directory is first renamed aside, so a concurrent build sees either the old
    directory or none, never a half-deleted file it takes for a cached one."""
    files = size = 0
    for name in DOWNLOADS:
        directory = root / name
        if not directory.is_dir():
            continue
        aside = root / f".{name}-deleting-{os.getpid()}"
        try:
            directory.rename(aside)
        except OSError:
            continue
        for path in aside.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    files += 1
                    size += path.stat().st_size
            except OSError:
                continue
        shutil.rmtree(aside, ignore_errors=True)
    return Reclaimed(files, size)


def die_with_parent() -> None:
    """``preexec_fn`` for download subprocesses: the kernel kills the child when dream dies
    (``PR_SET_PDEATHSIG``), so a killed build leaves no orphaned pip writing gigabytes into a
    scratch directory nobody will move. A no-op where prctl is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
