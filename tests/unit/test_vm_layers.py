"""An image's layers applied into one tree for the VM's disk (dream.vm.layers): OCI whiteouts,
opaque directories, replacement rules and parents that are symlinks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any, Iterable

import pytest

from dream.errors import DreamError
from dream.oci.tree import DIR, FILE, HARDLINK, SYMLINK, Tree
from dream.vm.layers import apply_layer, image_tree, resolve


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0o644,
           ) -> tuple[tarfile.TarInfo, Any]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def layer(tree: Tree, members: Iterable[tuple[tarfile.TarInfo, Any]], tmp: Path) -> Tree:
    apply_layer(tree, members, tmp)
    return tree


def test_whiteout_removes_below_not_in_the_same_layer(tmp_path: Path) -> None:
    tree = layer(Tree(), [member("etc", tarfile.DIRTYPE, mode=0o755), member("etc/a", data=b"a"),
                          member("etc/b", data=b"b"), member("opt/x/y", data=b"y")], tmp_path)
    layer(tree, [member("etc/.wh.a"), member("opt/.wh.x"), member("etc/c", data=b"c")], tmp_path)
    assert sorted(tree.entries) == ["etc", "etc/b", "etc/c"]


def test_opaque_directory_hides_everything_below(tmp_path: Path) -> None:
    tree = layer(Tree(), [member("srv", tarfile.DIRTYPE, mode=0o750), member("srv/old", data=b"1"),
                          member("srv/deep/er", data=b"2"), member("srvx", data=b"keep")], tmp_path)
    layer(tree, [member("srv/.wh..wh..opq"), member("srv/new", data=b"3")], tmp_path)
    assert sorted(tree.entries) == ["srv", "srv/new", "srvx"]
    srv = tree.get("srv")
    assert srv is not None and srv.mode == 0o750  # the directory itself stays


def test_directory_replaced_by_a_file_loses_its_contents(tmp_path: Path) -> None:
    tree = layer(Tree(), [member("data", tarfile.DIRTYPE), member("data/f", data=b"x")], tmp_path)
    layer(tree, [member("data", data=b"now a file")], tmp_path)
    entry = tree.get("data")
    assert entry is not None and entry.kind == FILE and sorted(tree.entries) == ["data"]


def test_entries_through_a_lower_symlink_land_where_it_points(tmp_path: Path) -> None:
    tree = layer(Tree(), [member("usr/bin", tarfile.DIRTYPE), member("bin", tarfile.SYMTYPE, link="usr/bin")], tmp_path)
    layer(tree, [member("bin", tarfile.DIRTYPE), member("bin/tool", data=b"#!"),
                 member("bin/alias", tarfile.LNKTYPE, link="bin/tool")], tmp_path)
    bin_entry, alias = tree.get("bin"), tree.get("usr/bin/alias")
    assert bin_entry is not None and bin_entry.kind == SYMLINK  # a directory over a symlink keeps the link
    assert tree.get("usr/bin/tool") is not None and tree.get("bin/tool") is None
    assert alias is not None and alias.kind == HARDLINK and alias.link == "usr/bin/tool"


def test_resolve_follows_absolute_and_relative_links_inside_the_root() -> None:
    tree = Tree()
    tree.add_symlink("lib", "usr/lib")
    tree.add_symlink("usr/lib/x", "/opt/y")
    tree.add_symlink("etc/up", "../..")
    assert resolve(tree, "lib/x/z") == "opt/y/z"
    assert resolve(tree, "etc/up/usr/q") == "usr/q"  # .. stops at the root
    loop = Tree()
    loop.add_symlink("a", "b")
    loop.add_symlink("b", "a")
    with pytest.raises(DreamError, match="too many symlinks"):
        resolve(loop, "a/f")


def test_large_files_are_staged_and_paths_checked(tmp_path: Path) -> None:
    big = b"x" * (2 << 20)
    tree = layer(Tree(), [member("big", data=big)], tmp_path)
    entry = tree.get("big")
    assert entry is not None and entry.data is None and entry.source is not None
    assert Path(entry.source).read_bytes() == big
    with pytest.raises(DreamError, match="escapes"):
        layer(Tree(), [member("../evil", data=b"")], tmp_path)


class Blobs:
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def local_blob(self, descriptor: Any) -> Path:
        return self.files[descriptor.digest]


def test_image_tree_reads_gzip_layers_in_order(tmp_path: Path) -> None:
    from dream.oci.descriptor import Descriptor
    files: dict[str, Path] = {}
    descriptors = []
    for number, members in enumerate([[member("etc", tarfile.DIRTYPE), member("etc/os", data=b"debian")],
                                      [member("etc/.wh.os"), member("etc/app", data=b"1")]]):
        path = tmp_path / f"layer{number}.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            for info, data in members:
                archive.addfile(info, data)
        digest = f"sha256:{number:064d}"
        files[digest] = path
        descriptors.append(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, path.stat().st_size))
    tree = image_tree(Blobs(files), descriptors, tmp_path / "scratch")
    assert sorted(tree.entries) == ["etc", "etc/app"]
    etc = tree.get("etc")
    assert etc is not None and etc.kind == DIR
