"""A wheel's member list and size, read without downloading the wheel.

Locking needs each wheel's member names (which paths a lower layer already provides, which
shared libraries it ships) but not its bytes. A zip keeps its names in the central directory at
its end, so, as pip's ``lazy_wheel`` does, only the tail (end-of-central-directory record and the
central directory) is read with HTTP range requests: a few hundred KB even for an 800 MB torch
wheel. In order of preference a listing comes from

1. the member cache ``$DREAM_CACHE/wheel-members/<sha256>.json`` (a relock reads nothing),
2. the wheel itself if the wheel cache (a build) already holds it, or a ``file://`` URL,
3. the index's URL for the file, read by range requests,
4. only for a server that refuses ranges: a full download into the wheel cache, which a build
   needs anyway (reported on stderr, so the cost is never silent).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests  # the session type only

from dream.download_cache import cache_dir
from dream.errors import DreamError
from dream.python.index import http_session
from dream.python.rangefile import NoRanges, RangeFile
from dream.python.resolve import Wheel, compile_pylock, offered
from dream.python.target import PythonTarget
from dream.python.wheels import cached_path, fetch

LISTING_VERSION = 1


@dataclass(frozen=True)
class Listing:
    """What the lock needs from a wheel file: its size in bytes and its archive member names."""

    size: int
    names: tuple[str, ...]


def members_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "wheel-members"


def cached_listing(sha256: str, root: Path | None = None) -> Listing | None:
    path = members_dir(root) / f"{sha256}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("version") != LISTING_VERSION:
            return None
        return Listing(int(data["size"]), tuple(data["names"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: read it again


def _remember(sha256: str, listing: Listing, root: Path | None) -> None:
    """Write the listing atomically (a killed lock leaves no half-written entry)."""
    directory = members_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": LISTING_VERSION, "size": listing.size, "names": list(listing.names)})
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".tmp-", suffix=".json",
                                     delete=False) as out:
        out.write(text)
    os.replace(out.name, directory / f"{sha256}.json")


def listing_of(wheel: Wheel, root: Path | None = None,
               session: requests.Session | None = None) -> Listing | None:
    """The wheel's listing from the member cache, the wheel cache or its URL; None when none
    of them has it (a wheel from an earlier lock run, whose URL is not known here)."""
    found = cached_listing(wheel.sha256, root)
    if found is not None:
        return found
    local = cached_path(wheel, root)
    if not local.is_file() and wheel.url.startswith("file:"):
        local = Path(urllib.request.url2pathname(urllib.parse.urlparse(wheel.url).path))
    if local.is_file():
        found = _read_zip(local, wheel, local.stat().st_size)
    elif wheel.url.startswith(("http://", "https://")):
        found = _read_remote(wheel, session)
    else:
        return None
    if found is not None:
        _remember(wheel.sha256, found, root)
    return found


def _read_remote(wheel: Wheel, session: requests.Session | None) -> Listing | None:
    try:
        with RangeFile(wheel.url, session) as remote:
            return _read_zip(remote, wheel, remote.size)
    except NoRanges as why:
        print(f"dream: {why}; downloading {wheel.filename} to read its member list", file=sys.stderr)
        return None


def _read_zip(source: Path | IO[bytes] | RangeFile, wheel: Wheel, size: int) -> Listing:
    try:
        with zipfile.ZipFile(source) as archive:  # RangeFile is file-like (read, seek, tell)
            return Listing(size, tuple(archive.namelist()))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DreamError(f"cannot read the file list of {wheel.filename}: {exc}") from None


def listings(wheels: list[Wheel], target: PythonTarget, root: Path | None = None) -> dict[str, Listing]:
    """Listings of ``wheels`` by sha256, without downloading them where the index allows.

    Wheels whose URL is unknown (locked by an earlier run, perhaps on another machine) are
    looked up again on the index by their exact pins; what no index serves by ranges is
    fetched into the wheel cache, as a build would."""
    with http_session() as session:
        out = {w.sha256: found for w in wheels if (found := listing_of(w, root, session)) is not None}
        unlisted = [w for w in wheels if w.sha256 not in out and not w.url]
        if unlisted:
            located = _locate(unlisted, target)
            for wheel in unlisted:
                if wheel.sha256 in located and (found := listing_of(located[wheel.sha256], root, session)):
                    out[wheel.sha256] = found
    fetched = [w for w in wheels if w.sha256 not in out]
    if fetched:
        paths = fetch(fetched, target, root)
        for wheel in fetched:
            out[wheel.sha256] = found = _read_zip(paths[wheel.sha256], wheel, paths[wheel.sha256].stat().st_size)
            _remember(wheel.sha256, found, root)
    return out


def _locate(wheels: list[Wheel], target: PythonTarget) -> dict[str, Wheel]:
    """The same files, with their index URLs, found by resolving the exact pins once more."""
    pins = sorted({f"{w.name}=={w.version}" for w in wheels})
    try:
        packages = compile_pylock(pins, target, what="the wheels locked below", no_deps=True)
    except DreamError:
        return {}  # vanished or unreachable: the fetch below reports it
    return {w.sha256: w for package in packages for w in offered(package)}
