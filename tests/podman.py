"""podman for the tests: the containers.conf they own, and the `require`-style check.

podman 4.3's defaults do not run on every machine the tests run on: it raises each container's
``nofile`` limit to 1048576, which a sandbox whose own hard limit is lower refuses ("error
setting rlimits for ready process: … operation not permitted"), and it looks for crun first.
So the tests point ``CONTAINERS_CONF`` at a file of their own (`CONF`): ulimits every such
machine allows, and runc (installed with Debian's podman). catatonit, the pods' infra
process, needs no setting: podman finds Debian's (apt-get install podman catatonit).

``CONTAINERS_CONF`` set (tools/test.sh exports it) names the file; it is written there when
missing. Unset, the file is ``.dream/podman/containers.conf`` of the repository and the tests
set the variable for themselves and every process they start. ``python -m tests.podman PATH``
writes it at PATH (for a shell that wants the file before pytest runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require

CONF = """\
# podman's settings for dream's tests (tests/podman.py); CONTAINERS_CONF names this file.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
"""
DEFAULT = REPO / ".dream" / "podman" / "containers.conf"


def write_conf(path: Path) -> Path:
    """`CONF` at ``path`` (its folder made), unless it already holds exactly that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != CONF:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(CONF)
        os.replace(temporary, path)
    return path


def conf() -> Path:
    """The tests' containers.conf, written where ``CONTAINERS_CONF`` says (else `DEFAULT`,
    which the variable is then set to, for this process and its children)."""
    named = os.environ.get("CONTAINERS_CONF")
    path = Path(named) if named else DEFAULT
    if not named or not path.is_file():
        write_conf(path)
    os.environ["CONTAINERS_CONF"] = str(path)
    return path


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``podman <args>`` with the tests' settings, its output captured."""
    conf()
    run = subprocess.run(["podman", *args], capture_output=True, text=True)
    if check and run.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({run.returncode}): {run.stderr.strip()}")
    return run


def require_podman() -> None:
    """podman that runs (its containers.conf the tests'): skip without it locally, fail in CI."""
    require("podman")
    conf()
    if not Path("/usr/libexec/podman/catatonit").exists() and not any(
            Path(folder, "catatonit").exists() for folder in os.environ.get("PATH", "").split(os.pathsep)):
        _missing("catatonit is not installed (apt-get install catatonit): podman cannot start a pod")
    info = podman("info", "--format", "json", check=False)
    if info.returncode != 0:
        _missing(f"podman does not run here: {info.stderr.strip().splitlines()[-1:] or info.returncode}")


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must have every real component)")
    pytest.skip(message)


def containers(label: str) -> list[str]:
    """The names of podman's containers, of every state, that carry the label ``key=value``."""
    listed = podman("ps", "-a", "--format", "json", "--filter", f"label={label}").stdout
    return sorted(name for item in json.loads(listed or "[]") for name in item.get("Names", []))


def pods(prefix: str) -> list[str]:
    """podman's pods whose name starts with ``prefix``."""
    listed = podman("pod", "ps", "--format", "json").stdout
    return sorted(item["Name"] for item in json.loads(listed or "[]") if str(item.get("Name", "")).startswith(prefix))


def volumes(prefix: str) -> list[str]:
    """podman's volumes whose name starts with ``prefix``."""
    listed = podman("volume", "ls", "--format", "json").stdout
    return sorted(item["Name"] for item in json.loads(listed or "[]") if str(item.get("Name", "")).startswith(prefix))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.podman PATH   (writes the tests' containers.conf there)")
    print(write_conf(Path(sys.argv[1])))
