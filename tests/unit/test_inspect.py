"""`doit inspect:<image>`: layer statistics and their cache, what changed since the previous
build of a tag, the text report and the SVG picture (dream/tasks/inspect.py)."""

from __future__ import annotations

import builtins
import io
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dream.errors import DreamError
from dream.oci.compress import CODECS
from dream.oci.descriptor import Descriptor
from dream.oci.image import write_image
from dream.oci.layer import build_layer
from dream.oci.read import open_layer
from dream.oci.tree import Tree
from dream.store import Store, open_store
from dream.tasks import inspect as ins

SVG = "{http://www.w3.org/2000/svg}"


def a_tar(entries: list[tuple[str, int | None]]) -> bytes:
    """A tar of (path, size) entries; size None: a directory; size -1: a symlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, size in entries:
            info = tarfile.TarInfo(path)
            if size is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif size == -1:
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere"
                archive.addfile(info)
            else:
                info.size = size
                archive.addfile(info, io.BytesIO(b"x" * size))
    return buffer.getvalue()


def test_stats_count_the_whole_stream_the_non_directories_and_rank_the_biggest_files() -> None:
    raw = a_tar([("usr", None), ("usr/a", 10), ("./usr/big", 5000), ("usr/link", -1), ("usr/mid", 700),
                 ("usr/tiny", 1)])
    stats = ins.layer_stats(io.BytesIO(raw), keep=3)
    assert stats.uncompressed == len(raw)  # the end-of-archive blocks too
    assert stats.files == 5  # the symlink counts, the directory does not
    assert stats.biggest == (("/usr/big", 5000), ("/usr/mid", 700), ("/usr/a", 10))


def test_stats_survive_the_cache_as_json_and_another_version_is_ignored() -> None:
    stats = ins.LayerStats(123, 4, (("/a", 100), ("/b", 3)))
    assert ins.LayerStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats
    assert ins.LayerStats.from_json({**stats.to_json(), "version": ins.STATS_VERSION + 1}) is None
    assert ins.LayerStats.from_json({"version": ins.STATS_VERSION}) is None
    assert ins.LayerStats.from_json([1, 2]) is None


def test_changes_by_layer_name() -> None:
    marks, removed = ins.changes([("base", "d1"), ("libs", "d9"), ("app", "d3"), ("extra", "d4")],
                                 [("base", "d1"), ("libs", "d2"), ("app", "d3"), ("old", "d5")])
    assert marks == ["same", "changed", "same", "added"]
    assert removed == ["old"]


def test_layer_names_come_from_dream_history_and_skip_empty_layers() -> None:
    manifest = {"layers": [{}, {}, {}]}
    config = {"history": [{"created_by": "dream layer base", "comment": "Debian"},
                          {"created_by": "ENV A=1", "empty_layer": True},
                          {"created_by": "dream layer app"}]}
    assert ins.layer_names(manifest, config) == [("base", "Debian"), ("app", ""), ("layer 3", "")]


def test_human_sizes() -> None:
    assert [ins.human(n) for n in (545, 2230, 599_571_429, 1_630_000_000)] == \
        ["545 B", "2.2 kB", "599.6 MB", "1.63 GB"]
    assert [ins.percent(n, 100_000) for n in (52_400, 40, 0)] == ["52.4%", "<0.1%", "0.0%"]


# -- on a real store ------------------------------------------------------------------------------

def layer_of(store: Store, files: dict[str, bytes]) -> Descriptor:
    tree = Tree()
    for path, data in files.items():
        tree.add_bytes(path, data)
    return build_layer(tree, CODECS["gzip"], 0, store)


def build(store: Store, layers: list[tuple[str, Descriptor]], name: str = "img") -> Descriptor:
    manifest = write_image(store, {"env": {"A": "1"}, "entrypoint": ["python3"], "user": "dev",
                                   "ports": ["8888/tcp"], "labels": {"team": "gpu"}},
                           [(layer_name, f"the {layer_name}", d) for layer_name, d in layers])
    store.tag(name, manifest)
    return manifest


def test_the_uncompressed_size_is_the_tar_the_diff_id_hashes(tmp_path: Path) -> None:
    import hashlib
    store = open_store(tmp_path / "s")
    layer = layer_of(store, {"etc/a": b"a" * 3000, "usr/b": b"b" * 40})
    with open_layer(store, layer) as stream:
        raw = stream.read()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diffID
    assert ins.compute_stats(store, layer).uncompressed == len(raw)


def test_a_tag_that_moves_keeps_the_manifest_and_config_it_named(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    first = build(store, [("base", layer_of(store, {"a": b"1"}))])
    assert store.previous("img") is None  # a first build has nothing before it
    second = build(store, [("base", layer_of(store, {"a": b"2"}))])
    build(store, [("base", layer_of(store, {"a": b"2"}))])  # the same image again: no move
    record = store.previous("img")
    assert record is not None and record["manifest"]["digest"] == first.digest
    assert record["config"]["history"][0]["created_by"] == "dream layer base"
    store.untag("img")
    record = store.previous("img")
    assert record is not None and record["manifest"]["digest"] == second.digest


def test_inspect_reports_kinds_changes_and_reads_each_layer_once(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    base = layer_of(store, {"usr/lib/big.so": b"B" * 50_000, "etc/os": b"debian"})
    build(store, [("base", base), ("libs", layer_of(store, {"opt/x": b"x" * 10})),
                  ("gone", layer_of(store, {"g": b"g"}))])
    manifest = build(store, [("base", base), ("libs", layer_of(store, {"opt/x": b"y" * 20_000})),
                             ("app", layer_of(store, {"app/main.py": b"print(1)"}))])
    kinds = {"base": "debian", "libs": "python", "app": "files"}
    read: list[str] = []

    def counting(store: Store, descriptor: Descriptor) -> ins.LayerStats:
        read.append(descriptor.digest)
        return ins.compute_stats(store, descriptor)

    lines: list[str] = []
    report = ins.inspect_image(store, "img", kinds, manifest, counting, lines.append)
    assert [(layer.name, layer.kind, layer.change) for layer in report.layers] == \
        [("base", "debian", "same"), ("libs", "python", "changed"), ("app", "files", "added")]
    assert report.removed == ["gone"] and report.previous is not None
    assert [layer.comment for layer in report.layers] == ["the base", "the libs", "the app"]
    assert len(read) == 3 and "reading 3 of 3 layers" in lines[0]
    assert report.biggest(2) == [("/usr/lib/big.so", 50_000, "base"), ("/opt/x", 20_000, "libs")]
    assert report.layers[0].stats is not None and report.layers[0].stats.files == 2

    def refuse(store: Store, descriptor: Descriptor) -> ins.LayerStats:
        raise AssertionError("a second inspect reads no layer")

    again = ins.inspect_image(store, "img", kinds, manifest, refuse, lines.append)
    assert [layer.stats for layer in again.layers] == [layer.stats for layer in report.layers]
    assert len(lines) == 1

    console = Console(record=True, width=200)
    ins.render(report, console)
    text = console.export_text()
    assert "libs" in text and "changed" in text and "removed" in text and "/usr/lib/big.so" in text
    assert '["python3"]' in text and "A=1" in text and "8888/tcp" in text and "team=gpu" in text


def test_a_layer_that_cannot_be_read_is_named_not_fatal(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    manifest = build(store, [("base", layer_of(store, {"a": b"1"}))])

    def broken(store: Store, descriptor: Descriptor) -> ins.LayerStats:
        raise DreamError("blob is only in a registry")

    report = ins.inspect_image(store, "img", {}, manifest, broken, lambda line: None)
    assert report.problems == ["base: blob is only in a registry"] and report.layers[0].stats is None
    assert report.layers[0].kind == "?"
    ins.svg_text(report)  # the picture still draws, by compressed size

    not_a_tar = store.put_bytes(b"\x1f\x8b" + b"garbage" * 100, "application/vnd.oci.image.layer.v1.tar+gzip")
    foreign = build(store, [("base", not_a_tar)], name="foreign")
    report = ins.inspect_image(store, "foreign", {}, foreign, say=lambda line: None)
    assert len(report.problems) == 1 and report.problems[0].startswith("base: cannot read it as a tar")


# -- the picture ----------------------------------------------------------------------------------

def a_report(sizes: list[tuple[str, str, int]], change: str = "same", removed: list[str] | None = None) -> ins.Report:
    layers = [ins.Layer(name, kind, "", Descriptor("application/vnd.oci.image.layer.v1.tar+gzip",
                                                   "sha256:" + f"{i:064x}", size // 2),
                        ins.LayerStats(size, 3, ()), change)
              for i, (name, kind, size) in enumerate(sizes)]
    return ins.Report("img", Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "f" * 64, 10),
                      layers, {}, removed=removed or [])


def test_the_svg_has_a_bar_per_layer_scaled_by_size_and_colored_by_kind() -> None:
    report = a_report([("base", "debian", 4_000_000), ("cublas", "cuda", 8_000_000),
                       ('a&b"<c', "python", 2_000_000)], change="changed", removed=["old"])
    root = ET.fromstring(ins.svg_text(report))
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "layer"]
    assert [g.get("data-name") for g in groups] == ["base", "cublas", 'a&b"<c']
    bars = [next(r for r in g.iter(f"{SVG}rect") if r.get("class") == "bar") for g in groups]
    widths = [float(bar.get("width", 0)) for bar in bars]
    assert widths[1] == pytest.approx(2 * widths[0]) and widths[0] == pytest.approx(2 * widths[2])
    assert [bar.get("fill") for bar in bars] == [ins.KIND_COLORS["debian"], ins.KIND_COLORS["cuda"],
                                                 ins.KIND_COLORS["python"]]
    packed = [next(r for r in g.iter(f"{SVG}rect") if r.get("class") == "compressed") for g in groups]
    assert float(packed[0].get("width", 0)) == pytest.approx(widths[0] / 2)  # compressed: half the size
    labels = ["".join(t.itertext()) for g in groups for t in g.iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels == ["1. base (debian)", "2. cublas (cuda)", '3. a&b"<c (python)']
    details = ["".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("class") == "detail"]
    assert details[1] == "4.0 MB → 8.0 MB (57.1%), 3 files, changed"
    segments = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "segment"]
    assert sum(float(s.get("width", 0)) for s in segments) == pytest.approx(460, abs=0.05)
    legend = [r.get("data-kind") for r in root.iter(f"{SVG}rect") if r.get("class") == "legend"]
    assert legend == ["debian", "cuda", "python"]
    assert any("old" in "".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("class") == "removed")


def test_the_svg_target_is_checked_before_any_layer_is_read(tmp_path: Path) -> None:
    with pytest.raises(DreamError, match="no directory"):
        ins.check_picture_target(str(tmp_path / "missing" / "x.svg"))
    with pytest.raises(DreamError, match="is a directory"):
        ins.check_picture_target(str(tmp_path))
    assert ins.check_picture_target(str(tmp_path / "x.svg")) == tmp_path / "x.svg"
    with pytest.raises(DreamError, match="the picture is an SVG file; name it …/x.svg"):
        ins.check_picture_target(str(tmp_path / "x.png"))


def test_without_drawsvg_the_svg_option_says_how_to_install_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_drawsvg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "drawsvg":
            raise ImportError("No module named 'drawsvg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_drawsvg)
    with pytest.raises(DreamError) as caught:
        ins.check_picture_target(str(tmp_path / "x.svg"))
    assert str(caught.value) == ins.INSTALL_HINT and "dream[inspect]" in str(caught.value)


def test_the_picture_is_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "layers.svg"
    ins.write_picture(a_report([("base", "debian", 1000)]), target)
    assert ET.parse(target).getroot().tag == f"{SVG}svg"
    assert [p.name for p in tmp_path.iterdir()] == ["layers.svg"]
