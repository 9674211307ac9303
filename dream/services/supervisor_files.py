"""dream's supervisor as files of an image: the package (standard library only) goes to
Debian's version-independent ``/usr/lib/python3/dist-packages/dream_supervisor``, where any
Debian ``python3`` imports it as ``dream_supervisor``. The services layer and each per-service
image's small layer put the same files there."""

from __future__ import annotations

from importlib import resources

PACKAGE_DIR = "/usr/lib/python3/dist-packages/dream_supervisor"
PACKAGE_PARENTS = ("/usr/lib/python3", "/usr/lib/python3/dist-packages")


def supervisor_sources() -> dict[str, bytes]:
    """The supervisor package's modules, by file name."""
    package = resources.files("dream.supervisor")
    return {entry.name: entry.read_bytes() for entry in sorted(package.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".py")}
