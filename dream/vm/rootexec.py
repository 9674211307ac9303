"""Run a program of the assembled VM root on the build machine, without chroot or privilege.

The root's own dynamic loader starts the root's binary with the root's libraries
(``ld.so --library-path … --argv0 NAME PROGRAM``), so what runs is the locked packages' code,
not the build machine's (which may lack it: no kmod here, another Python there). It works
where the build machine runs the root's architecture (amd64 on amd64); the paths it is given
are the build machine's, below the root.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping

from dream.errors import DreamError

LOADER = "usr/lib64/ld-linux-x86-64.so.2"
LIBRARY_PATH = ("usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib/x86_64-linux-gnu/systemd")
PYTHON = "usr/bin/python3"


def run_from_root(root: Path, program: str, argv0: str, args: list[str], what: str, hint: str,
                  env: Mapping[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> str:
    """Run ``root/program`` as ``argv0`` with ``args``; its stdout, or one line on failure."""
    loader, binary = root / LOADER, root / program
    for needed in (loader, binary):
        if not needed.exists():
            raise DreamError(f"{what}: the VM's root has no /{needed.relative_to(root)} ({hint})")
    command = [str(loader), "--library-path", ":".join(str(root / p) for p in LIBRARY_PATH),
               "--argv0", argv0, str(binary), *args]
    run = subprocess.run(command, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", **(env or {})})
    if run.returncode not in ok:
        detail = (run.stderr or run.stdout).strip().splitlines()
        raise DreamError(f"{what} failed: {detail[-1] if detail else run.returncode}")
    return run.stdout


def python_bytecode(root: Path) -> list[str]:
    """What python3's postinst does (py3compile): the .pyc of every module below
    ``usr/lib/python3*``, compiled by the root's own Python, recording the VM's paths.

    Hash-checked pycs (PEP 552, ``checked-hash``): they hold the source's hash, not its mtime,
    so their bytes do not depend on any clock, and Python still recompiles an edited module.
    Without them every boot of the VM (a fresh overlay) compiles all it imports again: seconds
    under TCG. Returns the directories compiled (none when the root has no python3)."""
    python = root / PYTHON
    if not python.exists() and not python.is_symlink():
        return []
    directories = sorted(str(p) for p in (root / "usr" / "lib").glob("python3*") if p.is_dir())
    if not directories:
        return []
    target = Path(python.resolve().name if python.is_symlink() else "python3")  # python3.11
    program = f"usr/bin/{target}"
    run_from_root(root, program, str(root / program),
                  ["-S", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "checked-hash",
                   "-s", str(root), "-p", "/", *directories],
                  "compiling the VM's Python modules", "python3 is in the image",
                  env={"PYTHONHOME": str(root / "usr"), "PYTHONDONTWRITEBYTECODE": "1"}, ok=(0, 1))
    return [str(Path(d).relative_to(root)) for d in directories]
