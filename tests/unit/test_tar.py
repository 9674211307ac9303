"""Deterministic tar: order, normalization, implicit parents, hard links; readable by tarfile."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from dream.oci.tar import tar_chunks
from dream.oci.tree import FILE, HARDLINK, Entry, Tree, clean_path


def tar_bytes(tree: Tree, mtime: int = 0) -> bytes:
    return b"".join(tar_chunks(tree.sorted_entries(), mtime))


def test_same_tree_same_bytes_whatever_insertion_order(tmp_path: Path) -> None:
    host = tmp_path / "f"
    host.write_bytes(b"data" * 1000)
    first, second = Tree(), Tree()
    first.add_bytes("b/x", b"1")
    first.add(Entry("a/f", FILE, 0o644, size=4000, source=host))
    second.add(Entry("a/f", FILE, 0o644, size=4000, source=host))
    second.add_bytes("b/x", b"1")
    assert tar_bytes(first) == tar_bytes(second)
    assert tar_bytes(first, 0) != tar_bytes(first, 1)


def test_members_are_sorted_normalized_and_parents_added() -> None:
    tree = Tree()
    tree.add_bytes("/usr/bin/z", b"z", 0o755, 1000, 1000)
    tree.add_symlink("usr/bin/a", "z")
    members = tarfile.open(fileobj=io.BytesIO(tar_bytes(tree))).getmembers()
    assert [m.name for m in members] == ["usr", "usr/bin", "usr/bin/a", "usr/bin/z"]
    assert all(m.mtime == 0 and m.uname == "" and m.gname == "" for m in members)
    assert members[0].mode == 0o755 and members[0].isdir()
    assert (members[3].uid, members[3].gid, members[3].mode) == (1000, 1000, 0o755)
    assert members[2].issym() and members[2].linkname == "z"


def test_hard_link_target_comes_first() -> None:
    tree = Tree()
    tree.add_bytes("usr/bin/perl5", b"perl")
    tree.add(Entry("usr/bin/perl", HARDLINK, 0o755, link="usr/bin/perl5"))
    archive = tarfile.open(fileobj=io.BytesIO(tar_bytes(tree)))
    perl, perl5 = archive.getmember("usr/bin/perl"), archive.getmember("usr/bin/perl5")
    assert perl.isfile() and archive.extractfile(perl).read() == b"perl"  # type: ignore[union-attr]
    assert perl5.islnk() and perl5.linkname == "usr/bin/perl"


def test_long_and_unicode_names_survive() -> None:
    tree = Tree()
    name = "d/" + "é" * 120 + "/" + "x" * 150
    tree.add_bytes(name, b"ok")
    archive = tarfile.open(fileobj=io.BytesIO(tar_bytes(tree)))
    assert archive.extractfile(name).read() == b"ok"  # type: ignore[union-attr]


def test_file_that_changes_size_is_an_error(tmp_path: Path) -> None:
    host = tmp_path / "f"
    host.write_bytes(b"12345")
    tree = Tree()
    tree.add(Entry("f", FILE, 0o644, size=3, source=host))
    with pytest.raises(OSError, match="changed size"):
        tar_bytes(tree)


@pytest.mark.parametrize("bad", ["../etc", "a/../../b"])
def test_paths_cannot_escape(bad: str) -> None:
    with pytest.raises(ValueError):
        clean_path(bad)


def test_remove_matching_takes_matches_and_what_is_below_them_only() -> None:
    from dream.oci.tree import Tree
    tree = Tree()
    for path in ("usr/share/doc/a/copyright", "usr/share/doc/b", "usr/share/docs/keep", "usr/share/doc-base/x"):
        tree.add_bytes(path, b"x")
    tree.add_dir("usr/share/doc")
    tree.remove_matching("/usr/share/doc/*")
    assert sorted(tree.entries) == ["usr/share/doc", "usr/share/doc-base/x", "usr/share/docs/keep"]
