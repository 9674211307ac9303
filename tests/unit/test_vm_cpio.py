"""dream's newc cpio writer (the VM's initramfs): the format the kernel reads, and the same
bytes for the same members whatever order they come in."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from dream.vm.cpio import MAGIC, TRAILER, Member, archive, header, read


def test_header_fields_and_padding() -> None:
    head = header(7, Member.file("init", b"abc", 0o755), "init", 0)
    assert head.startswith(MAGIC)
    fields = [int(head[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
    assert fields[0] == 7 and fields[1] == stat.S_IFREG | 0o755
    assert fields[2:5] == [0, 0, 1]  # root-owned, one link
    assert fields[6] == 3 and fields[11] == len("init") + 1
    assert len(head) % 4 == 0


def test_members_are_sorted_with_parents_and_a_trailer() -> None:
    data = archive([Member.file("lib/modules/b.ko", b"B"), Member.file("init", b"#!/bin/sh\n", 0o755),
                    Member.file("lib/modules/a.ko", b"A")])
    members = read(data)
    assert [m.path for m in members] == ["init", "lib", "lib/modules", "lib/modules/a.ko", "lib/modules/b.ko"]
    assert stat.S_ISDIR(members[1].mode) and stat.S_IMODE(members[1].mode) == 0o755
    assert data.rstrip(b"\0").endswith(TRAILER.encode())
    assert len(data) % 4 == 0


def test_order_of_input_does_not_change_bytes() -> None:
    members = [Member.file("a", b"1"), Member.symlink("bin/sh", "busybox"), Member.char_device("dev/console", 5, 1)]
    assert archive(members) == archive(list(reversed(members)))
    assert archive(members, mtime=5) != archive(members)


def test_device_node_and_symlink() -> None:
    members = {m.path: m for m in read(archive([Member.char_device("dev/console", 5, 1), Member.symlink("bin/sh", "busybox")]))}
    console = members["dev/console"]
    assert stat.S_ISCHR(console.mode) and (console.rdevmajor, console.rdevminor) == (5, 1)
    assert stat.S_ISLNK(members["bin/sh"].mode) and members["bin/sh"].data == b"busybox"


def test_later_member_wins_and_paths_stay_below_the_root() -> None:
    members = read(archive([Member.file("x", b"old"), Member.file("/x", b"new")]))
    assert [(m.path, m.data) for m in members] == [("x", b"new")]
    with pytest.raises(ValueError):
        archive([Member.file("../etc/passwd", b"")])


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_reads_it(tmp_path: Path) -> None:
    data = archive([Member.file("init", b"#!/bin/sh\necho hi\n", 0o755), Member.symlink("bin/sh", "busybox"),
                    Member.file("lib/modules/virtio.ko", b"\x7fELF" + bytes(range(7)))])
    run = subprocess.run(["cpio", "-idm", "--no-absolute-filenames", "--quiet"], input=data, cwd=tmp_path,
                         capture_output=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin" / "sh").readlink() == Path("busybox")
