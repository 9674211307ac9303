"""Resolve requirements to exact wheels for the image's interpreter with uv.

``uv pip compile --format pylock.toml`` with the image's Python version and platform names one
wheel per distribution with its sha256; the lock keeps the file name and hash, never the URL
(which would name the index host).
"""

from __future__ import annotations

import posixpath
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dream.errors import DreamError
from dream.python.index import uv_environment, uv_index_args
from dream.python.target import PythonTarget


@dataclass(frozen=True)
class Wheel:
    """One locked wheel. ``drop`` lists image paths another layer already provides;
    ``libs`` the shared libraries it installs (for the CUDA links)."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int = 0
    drop: tuple[str, ...] = field(default_factory=tuple)
    libs: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drop"], data["libs"] = list(self.drop), list(self.libs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Wheel:
        return cls(**{**data, "drop": tuple(data.get("drop", ())), "libs": tuple(data.get("libs", ()))})


def normalize(name: str) -> str:
    """PEP 503 name normalization (``Cupy_CUDA12x`` → ``cupy-cuda12x``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> list[str]:
    try:
        from uv import find_uv_bin
        return [find_uv_bin()]
    except (ImportError, FileNotFoundError):
        return [sys.executable, "-m", "uv"]


def resolve(requirements: list[str], target: PythonTarget, constraints: list[str] = (),
            what: str = "requirements") -> list[Wheel]:
    """The wheels that satisfy ``requirements`` (and ``constraints``) on ``target``, by name."""
    with tempfile.TemporaryDirectory(prefix="dream-uv-") as scratch:
        base = Path(scratch)
        (base / "requirements.in").write_text("\n".join(requirements) + "\n")
        (base / "constraints.txt").write_text("\n".join(constraints) + "\n")
        command = [*_uv(), "pip", "compile", str(base / "requirements.in"),
                   "--constraint", str(base / "constraints.txt"),
                   "--python-version", target.version, "--python-platform", target.uv_platform(),
                   "--only-binary", ":all:", "--index-strategy", "unsafe-best-match",
                   "--format", "pylock.toml", "--output-file", str(base / "pylock.toml"),
                   "--no-header", "--quiet", *uv_index_args()]
        run = subprocess.run(command, capture_output=True, text=True, env=uv_environment(), check=False)
        if run.returncode != 0:
            detail = " ".join(line.strip() for line in run.stderr.strip().splitlines()[-6:])
            raise DreamError(f"cannot resolve {what} for Python {target.version} "
                             f"({target.platform}): {detail}")
        lock = tomllib.loads((base / "pylock.toml").read_text())
    wheels = []
    for package in lock.get("packages", []):
        files = package.get("wheels") or []
        if len(files) != 1:
            raise DreamError(f"uv chose {len(files)} wheels for {package['name']}; expected one")
        url = files[0]["url"]
        wheels.append(Wheel(name=normalize(package["name"]), version=package["version"],
                            filename=posixpath.basename(urllib.parse.urlparse(url).path),
                            sha256=files[0]["hashes"]["sha256"]))
    return sorted(wheels, key=lambda wheel: wheel.name)
