"""The pieces of a `run` layer that need no sandbox: unpacking a layer for overlayfs, taking
the layer from the upper directory, finding the step's user, the key's inputs."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dream.builders.run import RunBuilder, resolve_user
from dream.builders.base import BuildContext
from dream.builders.sandbox import collect, missing_outputs, require_root
from dream.errors import DreamError, Location
from dream.oci.descriptor import Descriptor
from dream.oci.unpack import OPAQUE_XATTR, unpack_layer
from dream.recipe.model import LayerSpec, Recipe

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="owners, device nodes and trusted.* need root")


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return buffer


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname, info.mtime = kind, mode, uid, uid, link, 1234
    return info


@root_only
def test_unpack_turns_whiteouts_into_overlayfs_marks_and_keeps_owners_modes_and_links(tmp_path: Path) -> None:
    stream = _tar([(_info("d", tarfile.DIRTYPE, 0o750, 1000), b""),
                   (_info("d/tool", mode=0o4755), b"#!/bin/sh\n"),
                   (_info("d/alias", tarfile.LNKTYPE, link="d/tool"), b""),
                   (_info("link", tarfile.SYMTYPE, 0o777, link="d/tool"), b""),
                   (_info("d/.wh.gone"), b""),
                   (_info("e/.wh..wh..opq"), b"")])
    written = unpack_layer(stream, tmp_path / "l")
    root = tmp_path / "l"
    assert written == len(b"#!/bin/sh\n")
    gone = (root / "d" / "gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0  # hides d/gone of the layers below
    assert os.getxattr(root / "e", OPAQUE_XATTR) == b"y"
    tool = (root / "d" / "tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755 and tool.st_mtime == 1234
    assert (root / "d" / "alias").stat().st_ino == tool.st_ino
    assert os.readlink(root / "link") == "d/tool"
    folder = (root / "d").stat()
    assert (folder.st_uid, stat.S_IMODE(folder.st_mode), folder.st_mtime) == (1000, 0o750, 1234)


@pytest.mark.parametrize("members, why", [
    ([(_info("../escape"), b"x")], "escapes the image root"),
    ([(_info("l", tarfile.SYMTYPE, 0o777, link="/etc"), b""), (_info("l/passwd"), b"x")],
     "which it made a symlink or a file"),
    ([(_info("a", tarfile.LNKTYPE, link="nowhere"), b"")], "its hard link to /nowhere is not in the layer"),
])
def test_unpack_refuses_members_that_would_land_outside_or_through_a_link(tmp_path: Path, members: list[
        tuple[tarfile.TarInfo, bytes]], why: str) -> None:
    with pytest.raises(DreamError, match=why):
        unpack_layer(_tar(members), tmp_path / "l")


def test_collect_keeps_what_lies_under_the_outputs_and_names_every_other_write(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    for folder in ("proc", "dev", "tmp", "opt/ext/sub", "etc", "var/empty"):
        (upper / folder).mkdir(parents=True)
    (upper / "opt" / "ext" / "fast.so").write_bytes(b"\x7fELF")
    os.link(upper / "opt" / "ext" / "fast.so", upper / "opt" / "ext" / "sub" / "again.so")
    (upper / "opt" / "ext" / "current").symlink_to("fast.so")
    (upper / "etc" / "stray").write_text("x")
    if os.geteuid() == 0:
        os.mknod(upper / "opt" / "ext" / "deleted", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    tree, dropped = collect(upper, ["/opt/ext"])
    assert sorted(tree.entries) == ["opt", "opt/ext", "opt/ext/current", "opt/ext/fast.so", "opt/ext/sub",
                                    "opt/ext/sub/again.so"]
    assert tree.entries["opt/ext/sub/again.so"].kind == "hardlink"
    assert tree.entries["opt/ext/sub/again.so"].link == "opt/ext/fast.so"
    assert tree.entries["opt/ext/current"].link == "fast.so"
    expected = ["/etc/stray", "/var/empty"] + (["/opt/ext/deleted (deleted)"] if os.geteuid() == 0 else [])
    assert sorted(dropped) == sorted(expected)
    assert missing_outputs(tree, ["/opt/ext", "/opt/gen"]) == ["/opt/gen"]


def test_collect_with_the_root_as_output_takes_every_write_but_the_mounts(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    for folder in ("proc", "dev", "tmp", "usr/local/bin"):
        (upper / folder).mkdir(parents=True)
    (upper / "usr" / "local" / "bin" / "tool").write_text("x")
    tree, dropped = collect(upper, ["/"])
    assert sorted(tree.entries) == ["usr", "usr/local", "usr/local/bin", "usr/local/bin/tool"]
    assert dropped == []


LAYER = LayerSpec("step", "run", {}, "", Location("r.yaml", 7))


def test_the_steps_user_comes_from_the_topmost_account_files_below(tmp_path: Path) -> None:
    base, home = tmp_path / "base", tmp_path / "home"
    for root, passwd, group in ((base, "root:x:0:0:root:/root:/bin/bash\n", "root:x:0:\nvideo:x:44:\n"),
                                (home, "root:x:0:0:root:/root:/bin/bash\ndev:x:1000:1000::/home/dev:/bin/bash\n",
                                 "root:x:0:\nvideo:x:44:dev\ndev:x:1000:\n")):
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "passwd").write_text(passwd)
        (root / "etc" / "group").write_text(group)
    lower = [base, home]
    assert resolve_user(lower, "dev", LAYER) == (1000, 1000, [44, 1000], "/home/dev")
    assert resolve_user(lower, "root", LAYER) == (0, 0, [0], "/root")
    assert resolve_user(lower, "dev:video", LAYER) == (1000, 44, [44], "/home/dev")
    assert resolve_user(lower, "4242:4343", LAYER) == (4242, 4343, [4343], "/")
    assert resolve_user([base], "root", LAYER)[3] == "/root"
    with pytest.raises(DreamError, match="r.yaml:7: layers.step.run.user: no user 'dev' in the layers below"):
        resolve_user([base], "dev", LAYER)
    with pytest.raises(DreamError, match="no group 'audio'"):
        resolve_user(lower, "dev:audio", LAYER)


def _context(spec: dict[str, object], lower: list[str], env: dict[str, str]) -> BuildContext:
    layer = LayerSpec("step", "run", spec, "", Location("r.yaml", 7))
    recipe = Recipe(Path("r.yaml"), "r.yaml", "r", {}, [layer])
    descriptors = [("files", Descriptor("application/x", digest, 1)) for digest in lower]
    return BuildContext(recipe, layer, lambda: None, None, lambda: descriptors, lambda: env)  # type: ignore[arg-type]


def test_the_key_holds_the_layers_below_the_command_and_the_environment_but_not_the_time_limit() -> None:
    spec = {"command": ["make"], "user": "root", "workdir": "/", "env": {}, "outputs": ["/out"], "inputs": [],
            "timeout": 10}
    key = RunBuilder().key_inputs
    base = key(_context(spec, ["sha256:" + "a" * 64], {"A": "1"}))
    assert base == key(_context({**spec, "timeout": 99}, ["sha256:" + "a" * 64], {"A": "1"}))
    assert base != key(_context(spec, ["sha256:" + "b" * 64], {"A": "1"}))  # a layer below changed
    assert base != key(_context(spec, ["sha256:" + "a" * 64], {"A": "2"}))  # the image's env
    assert base != key(_context({**spec, "command": ["make", "-j2"]}, ["sha256:" + "a" * 64], {"A": "1"}))
    assert base != key(_context({**spec, "user": "dev"}, ["sha256:" + "a" * 64], {"A": "1"}))
    assert base["env"]["TZ"] == "UTC" and base["env"]["LC_ALL"] == "C.UTF-8" and base["env"]["A"] == "1"


def test_a_run_layer_says_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DreamError, match="layer r/step: a run layer needs root"):
        require_root("layer r/step")
