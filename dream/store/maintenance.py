"""`verify` and `gc`: the two store commands users run by hand.

verify re-hashes every blob and checks that everything a tag reaches is present (or, for a
layer not fetched yet, known to be in a registry: `doit pull:<image>` fetches it); gc drops the
blobs no tag reaches, the refs whose blobs are gone, and temporary files a killed build left.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Iterator

from dream.store.layout import Descriptor, Store, file_sha256

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass
class Report:
    """What a verify or gc pass found or did; ``problems`` empty means healthy."""

    checked: int = 0
    removed: int = 0
    freed: int = 0
    problems: list[str] = field(default_factory=list)


def reachable(store: Store, problems: list[str] | None = None) -> set[str]:
    """Digests of every blob a tag in index.json reaches (manifests, configs, layers)."""
    seen: set[str] = set()
    for entry in store.index()["manifests"]:
        for digest in _walk(store, Descriptor.from_json(entry), problems):
            seen.add(digest)
    return seen


def _walk(store: Store, descriptor: Descriptor, problems: list[str] | None) -> Iterator[str]:
    yield descriptor.digest
    if not store.has_blob(descriptor.digest, descriptor.size):
        if store.sources(descriptor.digest) and descriptor.mediaType not in MANIFEST_TYPES + INDEX_TYPES:
            return  # a base or cached layer not fetched yet: a registry holds it
        if problems is not None:
            problems.append(f"missing blob {descriptor.digest} ({descriptor.mediaType})")
        return
    if descriptor.mediaType in MANIFEST_TYPES:
        manifest = store.read_json(descriptor.digest)
        for child in [manifest["config"], *manifest.get("layers", [])]:
            yield from _walk(store, Descriptor.from_json(child), problems)
    elif descriptor.mediaType in INDEX_TYPES:
        for child in store.read_json(descriptor.digest).get("manifests", []):
            yield from _walk(store, Descriptor.from_json(child), problems)


def verify(store: Store) -> Report:
    """Re-hash every blob; check that all tagged images are complete."""
    report = Report()
    for path in sorted(store.blobs.iterdir()):
        report.checked += 1
        actual = "sha256:" + file_sha256(path)
        if actual != "sha256:" + path.name:
            report.problems.append(f"corrupt blob {path.name}: content hashes to {actual}")
    reachable(store, report.problems)
    return report


def gc(store: Store) -> Report:
    """Remove what no tag reaches; holds the store lock exclusively, so no build runs meanwhile."""
    report = Report()
    with store.lock("store"):
        keep = reachable(store, report.problems)
        if report.problems:
            return report  # never delete while the index points at something missing
        for path in store.blobs.iterdir():
            if "sha256:" + path.name not in keep:
                report.freed += path.stat().st_size
                path.unlink()
                report.removed += 1
        for ref in store.refs.glob("*/*.json"):
            if store.get_ref(ref.stem) is None:
                ref.unlink()
        for temporary in store.tmp_dir.iterdir():  # left by killed builds: none runs now
            if temporary.is_dir():
                shutil.rmtree(temporary)
            else:
                report.freed += temporary.stat().st_size
                temporary.unlink()
    return report
