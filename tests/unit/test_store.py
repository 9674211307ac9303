"""The store: atomic content-addressed blobs, refs, tags, verify and gc."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dream.oci.compress import CODECS
from dream.oci.image import write_image
from dream.oci.layer import build_layer
from dream.oci.tree import Tree
from dream.store import open_store
from dream.store.maintenance import gc, verify


def small_image(root: Path, text: bytes = b"hello"):  # type: ignore[no-untyped-def]
    store = open_store(root)
    tree = Tree()
    tree.add_bytes("etc/hello", text)
    layer = build_layer(tree, CODECS["gzip"], 0, store)
    return store, layer, write_image(store, {"name": "x"}, [("l", "", layer)])


def test_layer_blob_is_gzip_of_a_tar_with_the_recorded_diff_id(tmp_path: Path) -> None:
    store, layer, _ = small_image(tmp_path / "s")
    raw = subprocess.run(["gzip", "-dc", str(store.blob_path(layer.digest))], capture_output=True, check=True).stdout
    import hashlib
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diffID
    assert not any(store.tmp_dir.iterdir()), "no temporary file stays behind"


def test_same_content_same_digest_in_two_stores(tmp_path: Path) -> None:
    _, layer_a, manifest_a = small_image(tmp_path / "a")
    _, layer_b, manifest_b = small_image(tmp_path / "b")
    assert (layer_a.digest, manifest_a.digest) == (layer_b.digest, manifest_b.digest)


def test_refs_answer_by_key_and_tags_replace(tmp_path: Path) -> None:
    store, layer, manifest = small_image(tmp_path / "s")
    store.put_ref("k" * 64, layer)
    assert store.get_ref("k" * 64) == layer
    assert store.get_ref("q" * 64) is None
    store.tag("x", manifest)
    store.tag("x", manifest)
    assert len(store.index()["manifests"]) == 1
    assert store.tagged("x").digest == manifest.digest  # type: ignore[union-attr]


def test_verify_finds_a_corrupt_blob(tmp_path: Path) -> None:
    store, layer, manifest = small_image(tmp_path / "s")
    store.tag("x", manifest)
    assert verify(store).problems == []
    path = store.blob_path(layer.digest)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    problems = verify(store).problems
    assert len(problems) == 1 and layer.digest.split(":")[1] in problems[0]


def test_gc_keeps_what_tags_reach(tmp_path: Path) -> None:
    store, _, manifest = small_image(tmp_path / "s")
    store.tag("x", manifest)
    _, orphan, _ = small_image(tmp_path / "s", b"other")  # built, never tagged
    store.put_ref("o" * 64, orphan)
    report = gc(store)
    assert report.removed == 3  # the orphan's layer, config and manifest
    assert not store.has_blob(orphan.digest)
    assert store.get_ref("o" * 64) is None
    assert verify(store).problems == []
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


def test_a_blob_only_a_registry_holds_goes_through_the_stores_fetch_hook(tmp_path: Path) -> None:
    import hashlib

    import pytest

    from dream.errors import DreamError
    from dream.store import Descriptor, Store
    data = b'{"remote": true}'
    remote = Descriptor("application/vnd.oci.image.config.v1+json", "sha256:" + hashlib.sha256(data).hexdigest(),
                        len(data))
    plain = open_store(tmp_path / "s")
    plain.add_source(remote.digest, "registry.example/team/base")
    with pytest.raises(DreamError) as caught:  # no hook: the store never reaches for a network
        plain.local_blob(remote)
    assert str(caught.value) == (f"blob {remote.digest} is only in a registry (registry.example/team/base); "
                                 "this store was opened without registry access")
    asked: list[str] = []

    def fetch(store: Store, descriptor: Descriptor) -> None:
        asked.append(descriptor.digest)
        store.put_bytes(data, descriptor.mediaType)
    hooked = open_store(tmp_path / "s", fetch=fetch)
    assert hooked.local_blob(remote).read_bytes() == data and asked == [remote.digest]
    assert hooked.local_blob(remote).read_bytes() == data and asked == [remote.digest]  # here now: no second fetch


def test_the_store_and_the_oci_code_import_no_registry() -> None:
    """`doit list` and every store command load neither the registry code nor an HTTP client."""
    import sys
    code = ("import sys, dream.store.layout, dream.store.maintenance, dream.oci.read, dream.oci.image, "
            "dream.oci.layer, dream.oci.safety; "
            "print(sorted(m for m in sys.modules if m.startswith(('dream.registry', 'oras', 'requests'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
