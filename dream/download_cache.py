"""The download cache (``$DREAM_CACHE``, default ``~/.cache/dream``): what builds fetched.

Wheels (``wheels/<sha256>/``) and Debian packages (``debs/``) are downloaded at build time, each
verified against the lock's sha256, and kept so that a rebuild of a layer costs no network. They
are only ever needed to *rebuild* a layer: the store keeps every built layer, so the cache can be
emptied at any time (``doit gc --cache``) and the next build that needs a file fetches it again.

Kept by ``gc --cache``: the wheels' member lists (``wheel-members/``, a few KB each, which keep a
relock free of network reads), the metadata of exact ``cuda-toolkit`` releases
(``cuda-toolkit/``, dream/builders/cuda_versions.py) and apt's package lists (``apt/``).

A download runs in a ``download-*`` scratch directory next to its destination and files move
into place only when verified; the downloader's own temporary files (``TMPDIR``) are inside it
too. Ctrl-C removes the scratch directory on the way out. A process killed outright leaves it
(its downloader dies with it, `die_with_parent`), and the next download in that directory
removes every scratch directory that no running download holds (`download_scratch`).
"""

from __future__ import annotations

import contextlib
import functools
import fcntl
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, cast

DOWNLOADS = ("wheels", "debs")
STALE_AFTER = 3600.0  # seconds: a scratch directory without an in-use mark is stale after this
IN_USE = ".in-use"


def cache_dir() -> Path:
    """``$DREAM_CACHE``, default ``~/.cache/dream``."""
    return Path(os.environ.get("DREAM_CACHE") or Path.home() / ".cache" / "dream")


@contextlib.contextmanager
def download_scratch(directory: Path) -> Iterator[Path]:
    """A ``download-*`` scratch directory in ``directory`` for one download run, marked in use
    by an ``flock`` on its ``.in-use`` file for as long as the run lasts (the kernel drops it
    when the process dies), so that neither a sweep nor ``gc --cache`` takes it from under a
    running download. Stale scratch directories are swept first."""
    directory.mkdir(parents=True, exist_ok=True)
    sweep_stale_downloads(directory)
    with tempfile.TemporaryDirectory(dir=directory, prefix="download-") as scratch:
        # locked before it has its name: a sweep (another thread's or process's) that finds the
        # mark always finds it held, never between its creation and its lock
        fd, name = tempfile.mkstemp(dir=scratch, prefix=".new-")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(name, Path(scratch) / IN_USE)
            yield Path(scratch)
        finally:
            os.close(fd)


def _in_use(scratch: Path) -> bool:
    """Whether a live download holds ``scratch``; one without a mark yet counts as in use while
    younger than `STALE_AFTER` (it may be between its creation and its lock)."""
    try:
        fd = os.open(scratch / IN_USE, os.O_RDWR)
    except FileNotFoundError:
        try:
            return scratch.stat().st_mtime > time.time() - STALE_AFTER
        except OSError:
            return True
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def sweep_stale_downloads(directory: Path) -> int:
    """Remove the ``download-*`` scratch directories in ``directory`` that no live download
    holds (left by a killed one); the number removed."""
    removed = 0
    for scratch in directory.glob("download-*"):
        if scratch.is_dir() and not _in_use(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
            removed += 1
    return removed


@dataclass(frozen=True)
class Reclaimed:
    files: int
    bytes: int


def clear_downloads(root: Path) -> Reclaimed:
    """Delete every downloaded wheel and deb under ``root``, and every scratch directory no
    live download holds.

    Each entry is first renamed aside, so a concurrent build sees a cached file whole or not
    at all (and downloads it again); a download in progress keeps its scratch directory."""
    files = size = 0
    trash = root / f".deleting-{os.getpid()}"
    for name in DOWNLOADS:
        directory = root / name
        if not directory.is_dir():
            continue
        for entry in list(directory.iterdir()):
            if entry.name.startswith("download-") and _in_use(entry):
                continue
            trash.mkdir(exist_ok=True)
            aside = trash / f"{name}-{entry.name}"
            try:
                entry.rename(aside)
            except OSError:
                continue  # removed meanwhile
            for path in [aside, *aside.rglob("*")] if aside.is_dir() else [aside]:
                try:
                    if path.is_file() and not path.is_symlink() and path.name != IN_USE:
                        files += 1
                        size += path.stat().st_size
                except OSError:
                    continue
    shutil.rmtree(trash, ignore_errors=True)
    return Reclaimed(files, size)


@functools.lru_cache(maxsize=1)
def _prctl() -> Callable[..., int] | None:
    import ctypes  # here: only a build that downloads pays for it
    try:
        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None  # not Linux: no death signal


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for download subprocesses: the kernel kills the child when dream dies
    (``PR_SET_PDEATHSIG``), so a killed build leaves no orphaned pip writing gigabytes into a
    scratch directory nobody will move. ``prctl`` is looked up here, in the parent: the child
    of a process with threads (layer builds, the compression pool) must not import or load a
    library between fork and exec, since another thread may have held the lock it needs."""
    prctl = _prctl()

    def arm() -> None:
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    return arm
