"""Byte-compiled ``.pyc`` files, made at build time into the layer of their sources.

A pip-installed image has ``__pycache__`` next to every module: pip compiles at install time.
An image without them compiles on every first import in every new container, into a layer
that is thrown away with it (``import torch`` took 2.5× as long). So wheel layers carry their
bytecode, compiled so that the same sources give the same bytes on every build:

- ``unchecked-hash`` pycs (PEP 552): no source mtime inside, and the importer trusts them
  without re-reading the source (the files of an image layer never change);
- ``PYTHONHASHSEED=0``: sets of strings in constants are marshalled in hash order;
- each file compiled in a fresh state of one worker script (its code objects are dropped
  before the next file), so references shared across files cannot change what marshal writes.

Bytecode is specific to the interpreter's minor version, so it is compiled by an interpreter of
the image's ``X.Y`` found on this machine (Debian's ``/usr/bin/pythonX.Y`` first: it is the
image's own build on a Debian host), and its exact version is part of the layer's key: a
machine with another patch release builds its own layer rather than reusing bytes it would
not have made. Where no such interpreter exists, the layer ships without bytecode and says so
once; its key records that too.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from dream.download_cache import cache_dir
from dream.errors import DreamError
from dream.oci.compress import usable_cores
from dream.oci.tree import FILE, SYMLINK, Entry, Tree

WORKER = Path(__file__).with_name("bytecode_worker.py")
_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


@dataclass(frozen=True)
class Module:
    """A module to compile: its image path, and the wheel member holding its bytes (or, with
    an empty ``member``, the file at ``wheel`` holding them)."""

    image_path: str
    wheel: Path
    member: str = ""


@functools.lru_cache(maxsize=None)
def compiler(version: str) -> tuple[str, str] | None:
    """(path, exact version such as ``CPython 3.11.2``) of an interpreter of ``version``
    (``3.11``) on this machine, or None."""
    candidates = [f"/usr/bin/python{version}", shutil.which(f"python{version}")]
    if "%d.%d" % sys.version_info[:2] == version:
        candidates.append(sys.executable)
    for candidate in dict.fromkeys(c for c in candidates if c):
        identity = _identity(candidate, version)
        if identity is not None:
            return candidate, identity
    return None


def _identity(path: str, version: str) -> str | None:
    """``CPython 3.11.2`` for the interpreter at ``path`` if it is a CPython ``version``.

    Asked once per interpreter binary: the answer is kept in ``$DREAM_CACHE/interpreters.json``
    under the binary's real path, size, mtime and inode, so that a no-op build (which needs
    it for every wheel layer's key) starts no process. A script (a pyenv shim, say) picks its
    interpreter anew at every run, so it is asked every time."""
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
        with open(real, "rb") as handle:
            binary = handle.read(4) == b"\x7fELF"
    except OSError:
        return None
    signature = f"{real}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
    known = _known_interpreters() if binary else {}
    if signature not in known:
        known[signature] = _ask(path)
        if binary:
            _remember(known)
    found = known[signature]
    if not found.startswith("CPython ") or ".".join(found.split()[1].split(".")[:2]) != version:
        return None
    return found


def _ask(path: str) -> str:
    probe = "import platform; print(platform.python_implementation(), platform.python_version())"
    try:
        run = subprocess.run([path, "-I", "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return run.stdout.strip() if run.returncode == 0 else ""


def _known_file() -> Path:
    return cache_dir() / "interpreters.json"


def _known_interpreters() -> dict[str, str]:
    try:
        data = json.loads(_known_file().read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(known: dict[str, str]) -> None:
    """Written atomically: a killed build leaves the old file or the new one."""
    path = _known_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", delete=False) as out:
            json.dump(known, out)
        os.replace(out.name, path)
    except OSError:
        pass  # a read-only cache only costs the question next time


def compiler_key(version: str) -> str:
    """What the layer key records about bytecode: the compiling interpreter, or ``none``."""
    found = compiler(version)
    return found[1] if found else "none"


def add_bytecode(tree: Tree, sources: list[Module], version: str, scratch: Path, label: str) -> None:
    """Compile ``sources`` and add each ``__pycache__/<name>.<tag>.pyc`` to ``tree``. A module
    that does not compile (Python 2 test data in some wheels) gets none, as with pip."""
    found = compiler(version)
    if found is None:
        _warn_once(version, label)
        return
    if not sources:
        return
    out = scratch / "bytecode"
    jobs = [[str(s.wheel), s.member, "/" + s.image_path, str(out / s.image_path)] for s in sources]
    written = _run_workers(found[0], jobs, label, scratch / "bytecode-jobs")
    for image_path, pyc in written:
        path = Path(pyc)
        tree.add(Entry(image_path, FILE, 0o644, size=path.stat().st_size, source=path))


def tree_modules(tree: Tree, directories: tuple[str, ...], scratch: Path) -> list[Module]:
    """The modules of ``tree`` below ``directories``, to compile where they lie: regular
    ``.py`` files, and links to one in the tree (Debian's ``sitecustomize.py`` points into
    /etc), compiled under the link's name as Python imports them. Bytes the tree holds in
    memory are written to ``scratch`` first; a staged file is read where it is."""
    roots = tuple(directory.strip("/") + "/" for directory in directories)
    modules = []
    for path, entry in sorted(tree.entries.items()):
        if not path.endswith(".py") or not path.startswith(roots):
            continue
        if entry.kind == SYMLINK:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), entry.link)).lstrip("/")
            entry = tree.entries.get(target, entry)
        if entry.kind != FILE:
            continue
        if entry.data is not None:
            written = scratch / "bytecode-sources" / path
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_bytes(entry.data)
            modules.append(Module(path, written))
        elif entry.source is not None and not entry.member:
            modules.append(Module(path, entry.source))
    return modules


def _run_workers(python: str, jobs: list[list[str]], label: str, scratch: Path,
                 processes: int | None = None) -> list[tuple[str, str]]:
    """Run the worker over ``jobs`` in ``processes`` processes at once (default: one per core,
    and one per 200 modules at most); the split never changes a file's bytes (each file is
    compiled alone). Returns (pyc image path, file written)."""
    count = processes or max(1, min(usable_cores(), len(jobs) // 200))
    scratch.mkdir(parents=True, exist_ok=True)
    # Not -I: it would ignore PYTHONHASHSEED, which Pythons before 3.11 need for the order of
    # frozenset constants. The environment is this one only, -s keeps user site-packages out,
    # and the worker runs as -c from an empty directory, so nothing shadows the stdlib.
    env = {"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}
    command = [python, "-s", "-B", "-W", "ignore", "-c", WORKER.read_text()]
    running = []
    try:
        for index in range(count):
            orders, results = scratch / f"jobs-{index}.json", scratch / f"written-{index}.json"
            errors = scratch / f"errors-{index}.txt"
            orders.write_text(json.dumps(jobs[index::count]))
            with open(errors, "wb") as stderr:  # a file, not a pipe: no worker waits on a reader
                running.append((subprocess.Popen([*command, str(orders), str(results)], cwd=scratch,
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                 stderr=stderr, env=env), results, errors))
        written: list[tuple[str, str]] = []
        for worker, results, errors in running:
            if worker.wait() != 0:
                lines = errors.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                raise DreamError(f"layer {label}: compiling bytecode failed: {lines[-1]}")
            written += [(image, file) for image, file in json.loads(results.read_text())]
        return written
    finally:
        for worker, _, _ in running:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _warn_once(version: str, label: str) -> None:
    with _WARN_LOCK:
        if version in _WARNED:
            return
        _WARNED.add(version)
    print(f"dream: no python{version} on this machine to compile bytecode with: layer {label} "
          f"(and any other for Python {version}) ships without .pyc files, so first imports in a "
          f"container compile them; install python{version} to build them in", file=sys.stderr)
