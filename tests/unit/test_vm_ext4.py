"""The VM's ext4 image (dream.vm.ext4): mke2fs -d of a written-out tree, made byte-identical by
pinning what mke2fs would take from the machine and resetting what it copies from the files;
ownership, modes and device nodes set with debugfs where the directory cannot hold them."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from dream.oci.tree import CHAR, Entry, Tree
from dream.vm.ext4 import Fixes, make_ext4, materialize, owner_script, time_script, used_inodes

SIZE = 64 << 20


@pytest.fixture(autouse=True)
def e2fsprogs() -> None:
    if not all(shutil.which(t) or Path(f"/sbin/{t}").exists() for t in ("mke2fs", "debugfs", "dumpe2fs")):
        pytest.skip("e2fsprogs not installed")


def sample(reverse: bool = False) -> Tree:
    items = [("etc", "dir"), ("etc/passwd", "file"), ("usr/bin/tool", "file"), ("usr/bin/alias", "link"),
             ("bin", "sym"), ("var/lib/app", "appdir"), ("root", "private")]
    tree = Tree()
    for path, kind in (reversed(items) if reverse else items):
        if kind == "dir":
            tree.add_dir(path)
        elif kind == "file":
            tree.add_bytes(path, f"content of {path}\n".encode(), 0o755 if "bin" in path else 0o644)
        elif kind == "link":
            tree.add(Entry(path, "hardlink", 0o755, link="usr/bin/tool"))
        elif kind == "sym":
            tree.add_symlink(path, "usr/bin")
        elif kind == "appdir":
            tree.add_dir(path, 0o700, 1000, 1000)
        else:
            tree.add_dir(path, 0o700)
    return tree


def build(tmp: Path, tree: Tree, name: str, fixes: Fixes | None = None) -> Path:
    root = tmp / f"{name}-root"
    root.mkdir()
    found = materialize(tree, root, 0)
    image = tmp / f"{name}.ext4"
    make_ext4(root, image, SIZE, "key", "test-root", fixes or found, 0)
    return image


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def debugfs(image: Path, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, str(image)], capture_output=True, text=True).stdout


def test_two_builds_are_byte_identical_and_fsck_clean(tmp_path: Path) -> None:
    first = build(tmp_path, sample(), "a")
    second = build(tmp_path, sample(reverse=True), "b")  # another order, another folder, later
    assert sha(first) == sha(second)
    assert subprocess.run(["e2fsck", "-fn", str(first)], capture_output=True).returncode == 0
    other = tmp_path / "c.ext4"
    root = tmp_path / "c-root"
    root.mkdir()
    make_ext4(root, other, SIZE, "another key", "test-root", materialize(sample(), root, 0), 0)
    assert sha(other) != sha(first)  # the UUID and hash seed come from the key


def test_the_image_holds_the_tree(tmp_path: Path) -> None:
    image = build(tmp_path, sample(), "a")
    assert debugfs(image, "cat /etc/passwd") == "content of etc/passwd\n"
    listing = debugfs(image, "stat /usr/bin/alias")
    assert "Links: 2" in listing
    assert "Fast link dest: \"usr/bin\"" in debugfs(image, "stat /bin")
    app = debugfs(image, "stat /var/lib/app")
    assert "User:  1000   Group:  1000" in app and "Mode:  0700" in app
    for field in ("ctime", "atime", "crtime"):
        assert f"{field}: 0x00000001:00000000" in app
    assert "mtime: 0x00000000:00000000" in app


def test_fixes_for_a_build_without_root(tmp_path: Path) -> None:
    tree = sample()
    fixes = Fixes(all_root=True, owners=[("/var/lib/app", 1000, 1000)], modes=[("/root", 0o40000)],
                  nodes=[("/dev/console", "c", 5, 1, 0o600, 0, 5)])
    tree.add_dir("dev")
    image = build(tmp_path, tree, "n", fixes)
    console = debugfs(image, "stat /dev/console")
    assert "Type: character special" in console and "Device major/minor number: 05:01" in console
    assert "Group:     5" in console
    assert "Mode:  0000" in debugfs(image, "stat /root")
    assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0


def test_materialize_refuses_paths_below_a_symlink(tmp_path: Path) -> None:
    from dream.errors import DreamError
    tree = Tree()
    tree.add_symlink("lib", "usr/lib")
    tree.add_bytes("lib/x", b"")
    with pytest.raises(DreamError, match="below the symlink /lib"):
        materialize(tree, tmp_path, 0)


def test_scripts() -> None:
    assert owner_script(Fixes(all_root=True), [1, 2, 11, 12]) == [
        "sif <2> uid 0", "sif <2> gid 0", "sif <12> uid 0", "sif <12> gid 0"]
    assert owner_script(Fixes(nodes=[("/dev/null", "c", 1, 3, 0o666, 0, 0)]), [])[:4] == [
        'cd "/dev"', 'mknod "null" c 1 3', "cd /", 'sif "/dev/null" mode 020666']
    times = time_script([1, 2, 7, 11], 5)
    assert "sif <11> ctime 5" in times and "sif <2> atime_extra 0" in times
    assert not any(line.startswith(("sif <1> ", "sif <7> ")) for line in times)


def test_used_inodes_from_dumpe2fs_ranges() -> None:
    text = "Group 0: ...\n  Free inodes: 15-16, 20\nGroup 1: ...\n  Free inodes: 21-40\n"
    assert used_inodes(text, 20, 2) == [n for n in range(1, 21) if n not in (15, 16, 20)]


def test_device_entries_in_the_tree_as_root(tmp_path: Path) -> None:
    import os
    if os.geteuid() != 0:
        pytest.skip("mknod needs root; the non-root path is test_fixes_for_a_build_without_root")
    tree = Tree()
    tree.add(Entry("dev/null", CHAR, 0o666, devmajor=1, devminor=3))
    image = build(tmp_path, tree, "d")
    assert "Device major/minor number: 01:03" in debugfs(image, "stat /dev/null")
