"""`verify` and `gc`: the two store commands users run by hand.

verify re-hashes every blob and checks that everything a tag reaches is present (or, for a
layer not fetched yet, known to be in a registry: `doit pull:<image>` fetches it), and that every
ref still names the layer it was built as (its key, size and uncompressed digest); gc drops the
blobs no tag reaches, the refs whose blobs are gone, and temporary files a killed build left.
Neither raises for a damaged store: every problem is one line in the report.

``verify --repair`` removes what is corrupt (blobs whose bytes are not their digest, refs that
are no descriptor or name another layer, a store directory replaced by a file) and sets a
damaged index.json aside (``dream/index.json.bad``); the next build makes and tags it all again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from dream.errors import DreamError
from dream.oci.compress import decompressed
from dream.oci.mediatypes import INDEX_TYPES, MANIFEST_TYPES
from dream.store.layout import INDEX_MEDIA_TYPE, REF_NAME, Descriptor, Store, file_sha256
from dream.store.running import running_since


@dataclass
class Report:
    """What a verify or gc pass found or did; ``problems`` empty means healthy."""

    checked: int = 0
    removed: int = 0
    freed: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


def reachable(store: Store, problems: list[str] | None = None) -> set[str]:
    """Digests of every blob a tag in index.json reaches (manifests, configs, layers)."""
    seen: set[str] = set()
    problems = problems if problems is not None else []
    try:
        entries = store.index()["manifests"]
    except (OSError, DreamError) as exc:
        problems.append(str(exc))  # gc refuses: it cannot know what is in use
        return seen
    for entry in entries:
        name = entry.get("annotations", {}).get(REF_NAME, "")
        for digest in _walk(store, Descriptor.from_json(entry), problems, f"{name}: " if name else ""):
            seen.add(digest)
    return seen


def _walk(store: Store, descriptor: Descriptor, problems: list[str], image: str = "",
          depth: int = 0) -> Iterator[str]:
    yield descriptor.digest
    try:
        present = store.has_blob(descriptor.digest, descriptor.size)
    except DreamError as exc:  # a digest of another algorithm or spelling
        problems.append(f"{image}{exc}")
        return
    if not present:
        if store.sources(descriptor.digest) and descriptor.mediaType not in MANIFEST_TYPES + INDEX_TYPES:
            return  # a base or cached layer not fetched yet: a registry holds it
        state = "corrupt" if store.blob_path(descriptor.digest).exists() else "missing"
        problems.append(f"{image}{state} blob {descriptor.digest} ({descriptor.mediaType})")
        return
    if descriptor.mediaType not in MANIFEST_TYPES + INDEX_TYPES:
        return
    try:
        if depth > 8:
            raise DreamError(f"blob {descriptor.digest}: image indexes nested too deeply")
        children = _children(store, descriptor)
    except DreamError as exc:
        problems.append(f"{image}{exc}")
        return
    for child in children:
        yield from _walk(store, child, problems, image, depth + 1)


def _children(store: Store, descriptor: Descriptor) -> list[Descriptor]:
    """The descriptors a manifest (config, layers) or an image index (manifests) names."""
    if descriptor.mediaType in MANIFEST_TYPES:
        body = store.read_manifest(descriptor.digest)
        return [Descriptor.from_json(child) for child in [body["config"], *body.get("layers", [])]]
    body = store.read_json(descriptor.digest)
    entries = body.get("manifests", []) if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise DreamError(f"blob {descriptor.digest} is not an image index")
    return [Descriptor.from_json(child) for child in entries]


def verify(store: Store, repair: bool = False) -> Report:
    """Re-hash every blob, check every ref and that all tagged images are complete; with
    ``repair``, remove what is corrupt first (what a tag then misses is reported: a build
    makes it again). Never raises for a damaged store."""
    report = Report()
    for step in (_verify_layout, _verify_blobs, _verify_index, _verify_refs):
        step(store, report, repair)
    found = list(report.problems)
    reachable(store, report.problems)
    corrupt = {line.split()[2].rstrip(":") for line in found if line.startswith("corrupt blob ")}
    report.problems = [line for line in dict.fromkeys(report.problems)  # a bad index.json is seen twice
                       if line in found or not _names_corrupt(line, corrupt)]  # a corrupt blob once
    return report


def _names_corrupt(line: str, corrupt: set[str]) -> bool:
    return any(f"corrupt blob sha256:{hexdigest} (" in line for hexdigest in corrupt)


def _found(report: Report, repair: bool, problem: str, fix: Any, done: str) -> None:
    """Note ``problem``; with ``repair``, call ``fix`` and note ``done`` instead."""
    if not repair:
        report.problems.append(problem)
        return
    try:
        fix()
        report.repaired.append(f"{problem}: {done}")
    except OSError as exc:
        report.problems.append(f"{problem} (cannot repair: {exc.strerror or exc})")


def verify_layout(store: Store) -> Report:
    """Put back the store's own directories where a file took their place (`verify --repair`
    runs it before opening the store, which would refuse such a store)."""
    report = Report()
    _verify_layout(store, report, True)
    return report


def _verify_layout(store: Store, report: Report, repair: bool) -> None:
    """The store's own directories are directories (a file in their place breaks every write)."""
    for directory in (store.blobs, store.refs, store.tmp_dir, store.locks, store.sources_dir, store.verified):
        if directory.exists() and not directory.is_dir():
            _found(report, repair, f"{directory} is not a directory",
                   lambda d=directory: (d.unlink(), d.mkdir(parents=True)), "replaced it by an empty directory")


def _verify_blobs(store: Store, report: Report, repair: bool) -> None:
    """Hash every blob (whatever its marker says); refresh the markers of the good ones."""
    if not store.blobs.is_dir():
        return
    for path in sorted(store.blobs.iterdir()):
        report.checked += 1
        digest = "sha256:" + path.name
        if not (path.is_file() and len(path.name) == 64 and all(c in "0123456789abcdef" for c in path.name)):
            _found(report, repair, f"stray entry {path} (not a blob)",
                   lambda p=path: shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(), "removed it")
            continue
        try:
            actual = "sha256:" + file_sha256(path)
        except OSError as exc:
            report.problems.append(f"blob {path.name}: cannot read it: {exc.strerror or exc}")
            continue
        if actual != digest:
            _found(report, repair, f"corrupt blob {path.name}: content hashes to {actual}",
                   lambda d=digest: store.forget_blob(d), "removed it")
        else:
            try:
                store.mark_verified(digest)
            except OSError:
                pass  # a marker only saves a later hash
    if repair and store.verified.is_dir():  # markers of blobs gone (gc'd, removed)
        for marker in store.verified.iterdir():
            if not (store.blobs / marker.name).exists():
                marker.unlink(missing_ok=True)


def _verify_index(store: Store, report: Report, repair: bool) -> None:
    try:
        store.index()
    except FileNotFoundError:
        _found(report, repair, f"{store.root / 'index.json'} is missing",
               lambda: _empty_index(store), "started an empty one")
    except DreamError as exc:
        problem = str(exc).split("; run `doit verify --repair`")[0]
        _found(report, repair, problem, lambda: _set_index_aside(store),
               f"set it aside as {store.meta / 'index.json.bad'}, started an empty one "
               "(each `doit build:<image>` tags its image again)")


def _set_index_aside(store: Store) -> None:
    with store.lock("index"):
        os.replace(store.root / "index.json", store.meta / "index.json.bad")
        _empty_index(store)


def _empty_index(store: Store) -> None:
    store._write_atomic(store.root / "index.json",
                        b'{\n  "manifests": [],\n  "mediaType": "' + INDEX_MEDIA_TYPE.encode()
                        + b'",\n  "schemaVersion": 2\n}\n')


def _verify_refs(store: Store, report: Report, repair: bool) -> None:
    """Every ref is a descriptor written for its own key, of the size of the blob it names, and
    (for a layer here) with that blob's uncompressed digest as its diffID."""
    diff_ids: dict[str, str] = {}
    for path in sorted(store.refs.glob("*/*.json")) if store.refs.is_dir() else []:
        try:
            problem = _ref_problem(store, path, diff_ids)
        except DreamError as exc:
            problem = str(exc)
        if problem:
            _found(report, repair, problem, lambda p=path: p.unlink(), "removed it (the next build makes the layer again)")


def _ref_problem(store: Store, path: Path, diff_ids: dict[str, str]) -> str:
    """What is wrong with the ref at ``path`` ("" if nothing)."""
    descriptor = store.read_ref(path)  # raises for a ref that is no descriptor, or another key's
    try:
        blob = store.blob_path(descriptor.digest)
    except DreamError as exc:
        return f"ref {path.stem}: {exc}"
    if not blob.exists():
        return ""  # a layer only a registry holds, or one gc removed: the build makes it again
    if blob.stat().st_size != descriptor.size:
        return f"ref {path.stem}: names blob {descriptor.digest} of {blob.stat().st_size} bytes as {descriptor.size} bytes"
    if descriptor.diffID and ".layer." in descriptor.mediaType and store.has_blob(descriptor.digest, descriptor.size):
        if descriptor.digest not in diff_ids:
            diff_ids[descriptor.digest] = _diff_id(store, descriptor)
        if diff_ids[descriptor.digest] != descriptor.diffID:
            return (f"ref {path.stem}: names blob {descriptor.digest}, whose content is "
                    f"{diff_ids[descriptor.digest]}, not the layer {descriptor.diffID} it was built as")
    return ""


def _diff_id(store: Store, descriptor: Descriptor) -> str:
    """The sha256 of a layer blob's uncompressed bytes ("unreadable: …" if it does not decompress)."""
    digest = hashlib.sha256()
    try:
        with decompressed(open(store.blob_path(descriptor.digest), "rb"), descriptor.mediaType) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except Exception as exc:  # noqa: BLE001 (any decoder's error means the same: not that layer)
        return f"unreadable ({type(exc).__name__})"
    return "sha256:" + digest.hexdigest()


def gc(store: Store) -> Report:
    """Remove what no tag reaches; holds the store lock exclusively, so no build task runs
    meanwhile. A build that is still running (between its layer tasks and its tag) keeps what
    it made: blobs, refs and temporary files younger than the oldest running build stay
    (`dream.store.running`); with no build running, all that no tag reaches goes."""
    report = Report()
    with store.lock("store"):
        keep = reachable(store, report.problems)
        if report.problems:
            return report  # never delete while the index points at something missing
        since = running_since(store)
        keep |= _in_use_since(store, since)
        for path in store.blobs.iterdir():
            if "sha256:" + path.name not in keep:
                report.freed += path.stat().st_size
                store.forget_blob("sha256:" + path.name)
                report.removed += 1
        for ref in store.refs.glob("*/*.json"):
            if store.get_ref(ref.stem) is None and not _younger(ref, since):
                ref.unlink()
        for temporary in store.tmp_dir.iterdir():  # left by killed builds (or a running one's)
            if _younger(temporary, since):
                continue
            if temporary.is_dir():
                shutil.rmtree(temporary)
            else:
                report.freed += temporary.stat().st_size
                temporary.unlink()
        if store.rootfs.is_dir():  # made again by the next run step that needs them; none runs now
            report.freed += sum(os.lstat(os.path.join(folder, name)).st_size
                                for folder, _, names in os.walk(store.rootfs) for name in names)
            shutil.rmtree(store.rootfs)
    return report


def _younger(path: Path, since: float | None) -> bool:
    """Written at or after ``since`` (the oldest running build's start); False when none runs."""
    if since is None:
        return False
    try:
        return path.lstat().st_mtime >= since
    except OSError:
        return False


def _in_use_since(store: Store, since: float | None) -> set[str]:
    """Digests a running build may still tag: blobs written since it started, and the blobs of
    refs it wrote or re-wrote (a layer task writes its ref even when it reuses the blob)."""
    if since is None:
        return set()
    used = {"sha256:" + path.name for path in store.blobs.iterdir() if _younger(path, since)}
    for ref in store.refs.glob("*/*.json"):
        if _younger(ref, since):
            try:
                used.add(store.read_ref(ref).digest)
            except DreamError:
                continue  # not a descriptor: nothing to keep for it (verify reports it)
    return used
