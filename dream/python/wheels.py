"""Locked wheels on disk: fetched straight from the machine's indexes (`dream.python.direct`)
or through pip, checked against the lock's sha256 and cached by hash; `dream.python.install`
installs them into a layer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from dream.download_cache import cache_dir, download_scratch
from dream.errors import DreamError
from dream.fetch_plan import Download, Source, run_download
from dream.python.resolve import Wheel
from dream.python.target import PythonTarget
from dream.store.layout import file_sha256


def cached_path(wheel: Wheel, root: Path | None = None) -> Path:
    return (root or cache_dir()) / "wheels" / wheel.sha256 / wheel.filename


def fetch(wheels: list[Wheel], target: PythonTarget, root: Path | None = None) -> dict[str, Path]:
    """Paths of the verified wheel files, by sha256; missing ones are downloaded (`_download`)."""
    missing = [w for w in wheels if not cached_path(w, root).is_file()]
    if missing:
        _download(missing, target, root)
    return {w.sha256: cached_path(w, root) for w in wheels}


def downloads(wheels: list[Wheel], target: PythonTarget) -> list[Download]:
    """The wheels as files of an image's fetch plan (`dream.fetch_plan`): wheels for one
    target share pip runs, a big one has a run of its own."""
    source = Source(("pip", target), lambda some: fetch(some, target),
                    lambda wheel: cached_path(wheel).is_file(), splits=True)
    return [Download(w.sha256, w.size, w, source) for w in wheels]


def _download(wheels: list[Wheel], target: PythonTarget, root: Path | None) -> None:
    """Fetch ``wheels`` into the cache: straight from the index where it can
    (`dream.python.direct`), through pip for the rest."""
    from dream.python.direct import fetch_direct  # an HTTP client: only when downloading
    with download_scratch((root or cache_dir()) / "wheels") as base:
        left = fetch_direct(wheels, base / "direct")
        for wheel in wheels:
            if wheel not in left:
                _move_into_cache(base / "direct" / wheel.sha256 / wheel.filename, cached_path(wheel, root))
        if left:
            _pip_download(left, target, root, base)


def _pip_download(wheels: list[Wheel], target: PythonTarget, root: Path | None, base: Path) -> None:
    """The wheels through `pip download` (the machine's index settings, checked hashes)."""
    (base / "requirements.txt").write_text(
        "".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in wheels))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               *(arg for tag in target.platforms() for arg in ("--platform", tag)),
               "--python-version", target.version,
               "--implementation", "cp", "--abi", target.abi, "--abi", "abi3", "--abi", "none",
               "--require-hashes", "-r", str(base / "requirements.txt"),
               "--dest", str(base / "out"), "--quiet", "--progress-bar", "off"]
    (base / "tmp").mkdir()
    run = run_download(command, env={**os.environ, "TMPDIR": str(base / "tmp")})
    if run.returncode != 0:
        detail = " ".join(line.strip() for line in run.stderr.strip().splitlines()[-4:])
        raise DreamError(f"pip could not download the locked wheels: {detail} (a pinned wheel "
                         "gone from the index moves with `doit lock:<image> --upgrade-package NAME`)")
    by_hash = {w.sha256: w for w in wheels}
    for path in (base / "out").iterdir():
        wheel = by_hash.pop(file_sha256(path), None)
        if wheel is None or path.name != wheel.filename:
            raise DreamError(f"pip downloaded {path.name}, which the lock does not name "
                             "with this sha256; run `doit lock:<image>` again")
        _move_into_cache(path, cached_path(wheel, root))
    if by_hash:
        names = ", ".join(w.filename for w in by_hash.values())
        raise DreamError(f"pip did not download {names}")


def _move_into_cache(path: Path, destination: Path) -> None:
    """Move a verified file to its cache path; a `gc --cache` may remove the folder between
    making it and the move, so one more try follows."""
    for attempt in (1, 2):
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, destination)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise DreamError(f"the download cache changed under this build ({destination.parent}); "
                                 "run the build again") from None


def install_paths(members: Iterable[str], target: PythonTarget) -> list[str]:
    """The image paths (no leading slash) that a wheel's archive members install to.

    Files in ``<dist>.data/<scheme>/`` go to that scheme's directory, all others to the site
    directory. Only names are needed, so the member list may come from a central directory
    read over HTTP (`dream.python.members`) as well as from a wheel on disk.
    """
    scheme = target.scheme()
    out = []
    for name in members:
        if name.endswith("/"):
            continue
        top, _, rest = name.partition("/")
        if top.endswith(".data") and "/" in rest:
            kind, _, inner = rest.partition("/")
            base = scheme[kind]
            if kind == "headers":
                base = f"{base}/{top.removesuffix('.data').rsplit('-', 1)[0]}"
            out.append(f"{base}/{inner}".lstrip("/"))
        else:
            out.append(f"{scheme['purelib']}/{name}".lstrip("/"))
    return out
