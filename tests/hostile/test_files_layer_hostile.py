"""Issue 12, defect 12: what a `files` layer used to lose or let through.

* host hard links under one ``src`` (or across items of a layer) were copies: now one file and
  tar hard links, and the layer's key follows the link structure;
* file capabilities and ``user.*`` extended attributes were dropped: now PAX
  ``SCHILY.xattr.<name>`` records with the raw value (as Docker and BuildKit write them), in the
  key; a layer without any keeps the bytes and the key it had;
* a symlink whose relative target climbs above the image root (which dream then refused as a
  ``from:`` base) is refused in one line: an explicit ``symlink:`` at its recipe line, a host
  one naming its host path and image path. Absolute targets stay allowed.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dream.builders.base import BuildContext
from dream.builders.files import FilesBuilder
from dream.errors import DreamError, Location
from dream.oci.safety import check_layer_file
from dream.oci.tar import header, tar_chunks
from dream.oci.tree import FILE, Entry
from dream.recipe.model import LayerSpec, Recipe
from tests.conftest import Project, make_project

CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)  # v2: cap_net_bind_service=p
CLIMB = ("symlink target '../../../etc/x' climbs above the image root from {at}; write the "
         "absolute target it means (/etc/x): absolute targets resolve inside the image")


def context(items: list[dict[str, Any]]) -> BuildContext:
    layer = LayerSpec("l", "files", items, "", Location("r.yaml"))
    recipe = Recipe(Path("r.yaml"), "r.yaml", "r", {}, [layer])
    return BuildContext(recipe, layer, None, None)  # type: ignore[arg-type]


def key(items: list[dict[str, Any]]) -> Any:
    return FilesBuilder().key_inputs(context(items))


def tree_of(items: list[dict[str, Any]]) -> dict[str, Entry]:
    builder = FilesBuilder()
    ctx = context(items)
    builder.key_inputs(ctx)
    return {entry.path: entry for entry in builder.tree(ctx).sorted_entries()}


def tar_of(items: list[dict[str, Any]]) -> bytes:
    return b"".join(tar_chunks(list(tree_of(items).values()), 0))


def src(path: Path) -> dict[str, Any]:
    return {"dest": "/d", "src": str(path), "exclude": []}


def project_with(tmp_path: Path, recipe: str) -> tuple[Project, Path]:
    """A project whose recipe `f` is ``recipe``; returns it and its (empty) recipes/data."""
    project = make_project(tmp_path / "p", {"f.yaml": recipe}, with_demo=False)
    data = project.root / "recipes" / "data"
    data.mkdir()
    return project, data


def build(project: Project, check: bool = True) -> subprocess.CompletedProcess[str]:
    return project.doit("build:f", check=check, env={"DREAM_LAYER_CACHE": "off",
                                                     "PYTHONDONTWRITEBYTECODE": "1"})


def layer_blob(project: Project) -> Path:
    """The one layer blob of the image `f` in the project's store."""
    blobs = project.store / "blobs" / "sha256"
    manifest = json.loads((blobs / project.manifest_digest("f").split(":")[1]).read_text())
    (layer,) = manifest["layers"]
    return blobs / layer["digest"].split(":")[1]


def members(project: Project) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(layer_blob(project), "r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


def no_image(project: Project) -> bool:
    index = project.store / "index.json"
    return not index.exists() or json.loads(index.read_text())["manifests"] == []


def refused(run: subprocess.CompletedProcess[str], line: str) -> None:
    """The build failed with exit code 1 and ``line`` as one whole line, no traceback."""
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "Traceback" not in out, out
    assert line in out.splitlines(), out


# -- hard links ------------------------------------------------------------------------------
LINKED = """
image: {name: f}
layers:
  - name: data
    files:
      - {dest: /data, src: data}
      - {dest: /other, src: more}
"""


def test_hard_links_become_one_file_and_tar_hard_links_to_the_first_path(tmp_path: Path) -> None:
    project, data = project_with(tmp_path, LINKED)
    (data / "sub").mkdir()
    (data / "a").write_bytes(b"shared bytes\n")
    os.link(data / "a", data / "sub" / "b")
    (data / "c").write_bytes(b"shared bytes\n")  # the same bytes, another inode: a copy
    (project.root / "recipes" / "more").mkdir()
    os.link(data / "a", project.root / "recipes" / "more" / "x")  # across items of the layer
    build(project)
    found = members(project)
    assert found["data/a"].isfile() and found["data/a"].size == len(b"shared bytes\n")
    for name in ("data/sub/b", "other/x"):
        assert found[name].type == tarfile.LNKTYPE and found[name].linkname == "data/a", name
    assert found["data/c"].isfile() and found["data/c"].size == len(b"shared bytes\n")
    blob = layer_blob(project)
    assert check_layer_file(blob, "application/vnd.oci.image.layer.v1.tar+gzip", "f") == len(found)
    with tarfile.open(blob, "r:gz") as archive:  # the link reads back as the file's bytes
        assert archive.extractfile("other/x").read() == b"shared bytes\n"  # type: ignore[union-attr]


def test_the_key_follows_the_link_structure(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in "abc":
        (data / name).write_bytes(b"same\n")
    copies = key([src(data)])
    os.unlink(data / "b")
    os.link(data / "a", data / "b")
    a_b = key([src(data)])
    assert a_b != copies
    assert ["d/b", "hardlink", 0o644, 0, 0, "d/a", ""] in a_b
    os.unlink(data / "b")
    (data / "b").write_bytes(b"same\n")
    os.unlink(data / "c")
    os.link(data / "a", data / "c")
    a_c = key([src(data)])
    assert a_c not in (copies, a_b)
    assert ["d/c", "hardlink", 0o644, 0, 0, "d/a", ""] in a_c


def test_links_follow_what_later_items_replace_and_keep_different_owners_apart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a").write_bytes(b"one inode\n")
    for name in ("b", "c"):
        os.link(data / "a", data / name)
    entries = tree_of([src(data), {"dest": "/d/a", "content": "replaced\n"},
                       {"dest": "/e", "src": str(data / "a"), "owner": "1000:1000", "exclude": []}])
    assert entries["d/a"].data == b"replaced\n"
    assert (entries["d/b"].kind, entries["d/b"].source) == (FILE, data / "b")  # the first left
    assert (entries["d/c"].kind, entries["d/c"].link) == ("hardlink", "d/b")
    assert entries["e"].kind == FILE and entries["e"].uid == 1000  # another owner: a copy


# -- extended attributes -----------------------------------------------------------------------
XATTRS = """
image: {name: f}
layers:
  - name: data
    files: [{dest: /data, src: data}]
"""


def test_capabilities_and_user_xattrs_are_kept_as_pax_records(tmp_path: Path) -> None:
    project, data = project_with(tmp_path, XATTRS)
    tool = data / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    tool.chmod(0o755)
    os.setxattr(tool, "user.dream.test", b"hello")
    os.setxattr(tool, "security.capability", CAPABILITY)
    os.setxattr(tool, "trusted.dream", b"host only")  # neither capability nor user.*: dropped
    (data / "plain.txt").write_text("no attributes\n")
    build(project)
    found = members(project)
    records = {name: value.encode("utf-8", "surrogateescape")
               for name, value in found["data/tool"].pax_headers.items()}
    assert records == {"SCHILY.xattr.security.capability": CAPABILITY,
                       "SCHILY.xattr.user.dream.test": b"hello"}
    assert found["data/plain.txt"].pax_headers == {}
    raw = gzip.decompress(layer_blob(project).read_bytes())
    assert b"hdrcharset" not in raw  # raw bytes in the record, as Go's archive/tar writes them
    assert raw.index(b"SCHILY.xattr.security.capability=") < raw.index(b"SCHILY.xattr.user.dream.test=")
    assert check_layer_file(layer_blob(project), "application/vnd.oci.image.layer.v1.tar+gzip", "f") == 3


def test_xattrs_are_part_of_the_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x\n")
    before = key([src(data)])
    os.setxattr(data / "f", "user.dream.test", b"1")
    one = key([src(data)])
    os.setxattr(data / "f", "user.dream.test", b"2")
    two = key([src(data)])
    assert len({json.dumps(k) for k in (before, one, two)}) == 3
    assert ["d/f", "file", 0o644, 0, 0, "", hashlib.sha256(b"x\n").hexdigest(),
            [["user.dream.test", "32"]]] in two


def test_a_file_system_without_xattrs_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x\n")

    def unsupported(path: Any, follow_symlinks: bool = True) -> list[str]:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported", str(path))
    monkeypatch.setattr(os, "listxattr", unsupported)
    assert tree_of([src(data)])["d/f"].xattrs == ()


def test_an_unreadable_xattr_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x\n")
    os.setxattr(data / "f", "user.dream.test", b"1")

    def denied(path: Any, name: str, follow_symlinks: bool = True) -> bytes:
        raise OSError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(os, "getxattr", denied)
    with pytest.raises(DreamError) as caught:
        key([src(data)])
    assert str(caught.value) == f"cannot read {data / 'f'}: Permission denied"


# the sha256 of this tree's uncompressed tar, and of its key, as the code before extended
# attributes and hard links were kept computed them (commit 8a59a67)
PLAIN_TAR = "afff5dc9d5655f68538879633981f2859fcc08a4f4050ad82c7c2bba3fa75de3"
PLAIN_KEY = "e47c5b75e7d9fe2e33d99fef9e7eeb72563338c50c32e331b4a89e38dd717d18"


def plain_items(root: Path) -> list[dict[str, Any]]:
    plain = root / "plain"
    (plain / "pkg").mkdir(parents=True)
    (plain / "pkg" / "m.py").write_text("print(1)\n")
    (plain / "run.sh").write_text("#!/bin/sh\n")
    (plain / "run.sh").chmod(0o700)
    (plain / ("long-" + "n" * 120)).write_bytes(bytes(range(256)) * 5)  # a PAX path record
    os.symlink("run.sh", plain / "start")
    return [{"dest": "/app", "src": str(plain), "exclude": [], "owner": "1000:100"},
            {"dest": "/etc/motd", "content": "hello\n"},
            {"dest": "/usr/bin/py", "symlink": "/usr/bin/python3"},
            {"dest": "/var/empty", "directory": True, "mode": "0700"}]


def test_a_layer_without_xattrs_or_hard_links_keeps_its_bytes_and_key(tmp_path: Path) -> None:
    items = plain_items(tmp_path)
    raw = tar_of(items)
    assert hashlib.sha256(raw).hexdigest() == PLAIN_TAR
    assert hashlib.sha256(json.dumps(key(items), sort_keys=True).encode()).hexdigest() == PLAIN_KEY
    assert b"SCHILY" not in raw


def test_xattr_records_join_tarfiles_own_pax_header() -> None:
    """For UTF-8 values the header is byte for byte what tarfile writes from ``pax_headers``
    (one PAX header, the long path's record with the xattrs); a binary value adds nothing else."""
    name = "d/" + "é" * 70 + "/tool"
    entry = Entry(name, FILE, 0o755, size=2, data=b"hi", xattrs=(("user.a", b"1"), ("user.b", b"2")))
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = 2, 0o755, 0, "", ""
    info.pax_headers = {"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.b": "2"}
    assert header(entry, 0) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    binary = Entry(name, FILE, 0o755, size=2, data=b"hi", xattrs=(("security.capability", CAPABILITY),))
    with tarfile.open(fileobj=io.BytesIO(b"".join(tar_chunks([binary], 0)))) as archive:
        (member,) = archive.getmembers()
        assert member.name == name and archive.extractfile(member).read() == b"hi"  # type: ignore[union-attr]
        assert {k: v.encode("utf-8", "surrogateescape") for k, v in member.pax_headers.items()} == {
            "path": name.encode(), "SCHILY.xattr.security.capability": CAPABILITY}


# -- symlinks that climb above the image root --------------------------------------------------
EXPLICIT = """
image: {name: f}
layers:
  - name: data
    files:
      - dest: /app/link
        symlink: ../../../etc/x
"""


def test_an_explicit_symlink_climbing_above_the_root_is_one_line_at_its_recipe_line(tmp_path: Path) -> None:
    project, _ = project_with(tmp_path, EXPLICIT)
    run = build(project, check=False)
    refused(run, "recipes/f.yaml:7: layers[0].files[0].symlink: " + CLIMB.format(at="/app/link"))
    assert no_image(project)


def test_a_host_symlink_climbing_above_the_root_names_its_host_path_and_dest(tmp_path: Path) -> None:
    project, data = project_with(tmp_path, XATTRS)
    (data / "app").mkdir()
    os.symlink("../../../etc/x", data / "app" / "link")
    run = build(project, check=False)
    refused(run, f"{data.resolve() / 'app' / 'link'}: " + CLIMB.format(at="/data/app/link"))
    assert no_image(project)


def test_a_symlink_made_in_code_is_refused_by_the_builder_too() -> None:
    with pytest.raises(DreamError) as caught:
        key([{"dest": "/app/link", "symlink": "../../../etc/x"}])
    assert str(caught.value) == "r.yaml: layers.l.files[0].symlink: " + CLIMB.format(at="/app/link")


KEPT = """
image: {name: f}
layers:
  - name: data
    files:
      - {dest: /data, src: data}
      - {dest: /app/abs, symlink: /etc/x}
      - {dest: /app/up, symlink: ../etc/x}
"""


def test_absolute_and_inside_targets_are_kept_and_pass_dreams_own_check(tmp_path: Path) -> None:
    project, data = project_with(tmp_path, KEPT)
    (data / "sub").mkdir()
    os.symlink("/../../etc/passwd", data / "sub" / "abs")  # absolute: resolved in the image
    os.symlink("../../x", data / "sub" / "up")              # /data/sub → /x: inside
    build(project)
    found = members(project)
    assert {name: found[name].linkname for name in ("app/abs", "app/up", "data/sub/abs", "data/sub/up")} == {
        "app/abs": "/etc/x", "app/up": "../etc/x", "data/sub/abs": "/../../etc/passwd", "data/sub/up": "../../x"}
    assert check_layer_file(layer_blob(project), "application/vnd.oci.image.layer.v1.tar+gzip", "f") == len(found)
