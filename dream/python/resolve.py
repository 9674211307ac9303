"""Resolve requirements to exact wheels for the image's interpreter with uv.

``uv pip compile --format pylock.toml`` with the image's Python version and platform lists the
wheels of each chosen release that may fit, with sha256, size and URL; `dream.python.tags` picks
the one the image's interpreter would install. The lock keeps the file name, size and hash,
never the URL (which would name the index host): the URL only lives in memory for the lock run,
to read the wheel's member list (`dream.python.members`).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence
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
    #: where the index offers the file, known right after resolving; never in the lock
    url: str = field(default="", compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["url"]
        data["drop"], data["libs"] = list(self.drop), list(self.libs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Wheel:
        return cls(**{**data, "drop": tuple(data.get("drop", ())), "libs": tuple(data.get("libs", ()))})


class ResolveError(DreamError):
    """uv found no solution. ``unknown`` is a distribution the index does not have at all and
    ``no_version`` a requirement no release matches (both as uv wrote them, if that was the
    cause), so that a builder can point at the recipe line that asked for it."""

    def __init__(self, message: str, unknown: str = "", no_version: str = "") -> None:
        super().__init__(message)
        self.unknown = unknown
        self.no_version = no_version


def normalize(name: str) -> str:
    """PEP 503 name normalization (``Cupy_CUDA12x`` → ``cupy-cuda12x``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> list[str]:
    try:
        from uv import find_uv_bin
        return [find_uv_bin()]
    except (ImportError, FileNotFoundError):
        return [sys.executable, "-m", "uv"]


_answers: dict[tuple[tuple[str, ...], PythonTarget, tuple[str, ...]], list[Wheel]] | None = None


@contextlib.contextmanager
def answers_kept() -> Iterator[None]:
    """Within the block, `resolve` asks uv each question once: the same requirements and
    constraints, in the same order, on the same target, get the first answer again. One lock
    asks twice (a cuda layer's clash check resolves the python requirements on the CUDA pins,
    then the python layer's own lock does the same: 0.3 s of uv). A failure is not kept, so
    each asker gets the error in its own words. Outside the block nothing is kept."""
    global _answers
    outer, _answers = _answers, {} if _answers is None else _answers
    try:
        yield
    finally:
        _answers = outer


def resolve(requirements: list[str], target: PythonTarget, constraints: Sequence[str] = (),
            what: str = "requirements") -> list[Wheel]:
    """The wheels that satisfy ``requirements`` (and ``constraints``) on ``target``, by name."""
    question = (tuple(requirements), target, tuple(constraints))
    if _answers is not None and question in _answers:
        return list(_answers[question])
    wheels = [_choose(package, target) for package in compile_pylock(requirements, target, constraints, what)]
    answer = sorted(wheels, key=lambda wheel: wheel.name)
    if _answers is not None:
        _answers[question] = answer
    return list(answer)


def compile_pylock(requirements: list[str], target: PythonTarget, constraints: Sequence[str] = (),
                   what: str = "requirements", no_deps: bool = False) -> list[dict[str, Any]]:
    """uv's ``pylock.toml`` packages for ``requirements`` on ``target`` (every wheel that may fit)."""
    with tempfile.TemporaryDirectory(prefix="dream-uv-") as scratch:
        base = Path(scratch)
        (base / "requirements.in").write_text("\n".join(requirements) + "\n")
        (base / "constraints.txt").write_text("\n".join(constraints) + "\n")
        command = [*_uv(), "pip", "compile", str(base / "requirements.in"),
                   "--constraint", str(base / "constraints.txt"),
                   "--python-version", target.version, "--python-platform", target.uv_platform(),
                   "--only-binary", ":all:", "--index-strategy", "unsafe-best-match",
                   "--format", "pylock.toml", "--output-file", str(base / "pylock.toml"),
                   "--no-header", "--quiet", *(["--no-deps"] if no_deps else []), *uv_index_args()]
        run = subprocess.run(command, capture_output=True, text=True, env=uv_environment(), check=False)
        if run.returncode != 0:
            raise _failure(run.stderr, what, target)
        import tomllib  # only a lock reads uv's output: every doit command imports this module
        packages: list[dict[str, Any]] = tomllib.loads((base / "pylock.toml").read_text()).get("packages", [])
    for package in packages:
        for entry in package.get("wheels") or []:
            if not entry.get("url") and entry.get("path"):  # a local file, relative to the lock
                entry["url"] = (base / entry["path"]).resolve().as_uri()
    return packages


def offered(package: dict[str, Any]) -> list[Wheel]:
    """Every wheel file of a pylock package entry, with its URL and size where uv gives them."""
    name = normalize(package["name"])
    out = []
    for entry in package.get("wheels") or []:
        url = str(entry["url"])
        out.append(Wheel(name=name, version=package["version"], filename=_filename(url),
                         sha256=entry["hashes"]["sha256"], size=int(entry.get("size") or 0), url=url))
    return out


def _choose(package: dict[str, Any], target: PythonTarget) -> Wheel:
    """The one wheel of a pylock package entry that the image's interpreter would install."""
    files = offered(package)
    what = f"{normalize(package['name'])} {package['version']}"
    if not files:
        raise DreamError(f"the package index offers no wheel of {what} "
                         f"for Python {target.version} on {target.platform}")
    from dream.python.tags import best_wheel  # packaging.tags: lock time only
    return best_wheel(what, [(w.filename, w) for w in files], target)


def _filename(url: str) -> str:
    return urllib.parse.unquote(posixpath.basename(urllib.parse.urlparse(url).path))


_UNKNOWN = re.compile(r"Because (\S+) was not found in the package registry and you require")
_NO_VERSION = re.compile(r"Because there is no version of (\S+?),? and you require")


def _failure(stderr: str, what: str, target: PythonTarget) -> ResolveError:
    """uv's multi-line report as one line; the causes a recipe line can be blamed for, parsed.

    Only a *direct* requirement is blamed (``… and you require X``): a missing dependency of a
    dependency is the index's or that package's problem, reported with uv's own words."""
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())
    text = re.sub(r"^error: ", "", text)
    if len(text) > 600:
        text = text[:600] + " …"
    unknown = _UNKNOWN.search(stderr)
    no_version = _NO_VERSION.search(stderr)
    return ResolveError(f"cannot resolve {what} for Python {target.version} ({target.platform}): {text}",
                        unknown=unknown.group(1) if unknown else "",
                        no_version=no_version.group(1) if no_version else "")
