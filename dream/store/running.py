"""Which processes are using the store right now, so that `gc` spares what they made.

A build writes a layer's blob and ref in one doit task and tags the image in a later one; each
task holds the store lock (shared) only while it runs, so between them the new blobs are
referenced by nothing but refs. `gc` (which takes the lock exclusively) must not take them.

Every process that takes the store lock shared registers itself once: a marker file
``dream/running/<pid>-<random>.json`` holding its start time, on which the process keeps an
exclusive `flock` until it exits (the kernel drops it even on SIGKILL). `gc` reads the markers:
one it can lock belongs to a process that is gone and is removed; the oldest live one is the
start of the oldest running build, and gc keeps every unreferenced blob, ref and temporary file
younger than that (`running_since`). With no build running, gc removes all it did before.

Layer tasks run in threads of one process (`dream.project`): the marker is made once per process
and store, under a thread lock; and gc's own process counts as a running build once it has taken
the lock shared (a `doit build:x gc` may run gc between x's layer tasks and its tag).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any



def _process_start() -> float:
    """When this process started (Linux: /proc), else now: either is before anything it wrote."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return min(time.time(), boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


STARTED = _process_start()
SLACK_S = 2.0  # file times and clocks are compared: a little margin, on the side of keeping
_held: dict[str, tuple[int, int, Path]] = {}  # store root → (pid, locked fd, marker)
_registering = threading.Lock()  # one marker per process and store, whichever thread asks first


def running_dir(store: Any) -> Path:
    return Path(store.meta) / "running"


def register(store: Any) -> None:
    """Mark this process as one using ``store`` (idempotent, thread-safe; never fails a build)."""
    with _registering:
        _register(store)


def _register(store: Any) -> None:
    key = str(store.root)
    held = _held.get(key)
    if held is not None and held[0] == os.getpid():
        return
    directory = running_dir(store)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".new-")
    except OSError:
        return  # a read-only or full store: the marker only protects, the build goes on
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it has its name: gc never sees it unlocked
        os.write(fd, json.dumps({"pid": os.getpid(), "started": STARTED}).encode())
        marker = directory / f"{os.getpid()}-{os.urandom(6).hex()}.json"  # no uuid: its import costs every build 1 ms
        os.rename(name, marker)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
        return
    _held[key] = (os.getpid(), fd, marker)


@atexit.register
def _unregister() -> None:
    with _registering:
        held = list(_held.values())
    for pid, fd, marker in held:
        if pid == os.getpid():
            with contextlib.suppress(OSError):
                marker.unlink()
            with contextlib.suppress(OSError):
                os.close(fd)


def running_since(store: Any) -> float | None:
    """The start time of the oldest live process using ``store`` (None: there is none); the
    markers of processes that are gone are removed on the way. The caller's own process counts
    when it has a marker (it took the store lock shared: its build tasks may be running in
    other threads, or may have built layers that no tag reaches yet)."""
    oldest: float | None = None
    try:
        markers = sorted(running_dir(store).glob("*.json"))
    except OSError:
        return None
    for marker in markers:
        try:
            fd = os.open(marker, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: its process is alive
            else:
                with contextlib.suppress(OSError):
                    marker.unlink()  # its process is gone (exited or killed)
                continue
            try:
                data = json.loads(os.read(fd, 4096))
                int(data["pid"])  # a marker without its pid is damaged: its file's age counts
                started = float(data["started"])
            except (OSError, ValueError, KeyError, TypeError):
                started = os.fstat(fd).st_mtime
            oldest = started if oldest is None else min(oldest, started)
        finally:
            os.close(fd)
    return None if oldest is None else oldest - SLACK_S
