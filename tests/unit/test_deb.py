"""The in-process .deb reader (`dream.debian.deb`) and the unpacking built on it.

Packages are built here with ``dpkg-deb --build`` (in every compression it writes) and damaged
by hand; one real package from the download cache, when there is one, is checked against
``dpkg-deb`` itself, so the reader cannot drift from what the Debian layers were built from.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from dream.boundary import failure_line
from dream.debian.deb import Deb
from dream.debian.unpack import unpack
from dream.errors import DreamError
from dream.oci.tree import FILE, HARDLINK, SYMLINK

CACHE = Path.home() / ".cache" / "dream" / "debs"
CONTROL = "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
POSTINST = "#!/bin/sh\nupdate-alternatives --install /usr/bin/hi hi /usr/bin/hello 10\n"
BIG = bytes(range(256)) * 5000  # over unpack's in-memory limit: staged on disk

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def build(tmp: Path, name: str = "hello", compression: str = "xz",
          files: dict[str, bytes] | None = None) -> Path:
    """A .deb from ``dpkg-deb --build``: a file in /bin (merged-/usr), a symlink, a hard link,
    a postinst, and ``files`` (path → bytes) on top."""
    root = tmp / f"{name}-{compression}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(CONTROL.format(name=name))
    (root / "DEBIAN" / "postinst").write_text(POSTINST)
    (root / "DEBIAN" / "postinst").chmod(0o755)
    shipped = {"bin/hello": b"#!/bin/sh\necho hi\n", "usr/share/doc/big": BIG, **(files or {})}
    for path, data in shipped.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / "bin" / "hello").chmod(0o755)
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    (root / "usr" / "bin" / "hi").symlink_to("../../bin/hello")
    (root / "usr" / "share" / "doc" / "same").hardlink_to(root / "usr" / "share" / "doc" / "big")
    deb = tmp / f"{name}-{compression}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def ar(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive by hand, for the .debs dpkg-deb will not write."""
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def ar_members(deb: Path) -> list[tuple[str, bytes]]:
    return [(m.name, deb.read_bytes()[m.offset:m.offset + m.size]) for m in Deb(deb).members.values()]


def listing(archive: tarfile.TarFile) -> list[tuple[object, ...]]:
    """Every member's metadata and the sha256 of its bytes."""
    rows = []
    for m in archive:
        source = archive.extractfile(m) if m.isfile() else None
        digest = hashlib.sha256(source.read()).hexdigest() if source else ""
        rows.append((m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname, m.devmajor, m.devminor,
                     digest))
    return rows


def dpkg_deb(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["dpkg-deb", *args], capture_output=True)


def fsys_tarfile(deb: Path) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(dpkg_deb("--fsys-tarfile", str(deb)).stdout))


def real_package(tmp_path: Path) -> Path:
    """The smallest package in the download cache, or one built here when the cache is empty."""
    cached = sorted(CACHE.glob("*.deb"), key=lambda p: p.stat().st_size) if CACHE.is_dir() else []
    return cached[0] if cached else build(tmp_path)


def test_agrees_with_dpkg_deb(tmp_path: Path) -> None:
    path = real_package(tmp_path)
    deb = Deb(path)
    control = deb.control_files()
    assert control["control"] == dpkg_deb("-f", str(path)).stdout
    info = dpkg_deb("--info", str(path), "postinst")
    assert control.get("postinst", b"") == (info.stdout if info.returncode == 0 else b"")
    with deb.data() as ours, fsys_tarfile(path) as theirs:
        assert listing(ours) == listing(theirs)


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_every_compression_dpkg_deb_writes(tmp_path: Path, compression: str) -> None:
    path = build(tmp_path, compression=compression)
    with Deb(path).data() as ours, fsys_tarfile(path) as theirs:
        assert listing(ours) == listing(theirs)
    assert Deb(path).control_files()["control"] == CONTROL.format(name="hello").encode()


def test_data_tar_bz2(tmp_path: Path) -> None:
    """dpkg still reads data.tar.bz2 (old packages) though it no longer writes it."""
    plain = build(tmp_path, compression="none")
    members = [(n, bz2.compress(d) if n == "data.tar" else d) for n, d in ar_members(plain)]
    path = tmp_path / "bz2.deb"
    path.write_bytes(ar([(n + ".bz2" if n == "data.tar" else n, d) for n, d in members]))
    with Deb(path).data() as ours, Deb(plain).data() as theirs:
        assert listing(ours) == listing(theirs)


def test_unpack(tmp_path: Path) -> None:
    unpacked = unpack({"hello": build(tmp_path)}, tmp_path / "staging")
    tree = unpacked.tree
    assert unpacked.control["hello"] == CONTROL.format(name="hello")
    assert unpacked.postinst["hello"] == POSTINST
    assert "/bin/hello" in unpacked.files["hello"]  # listed as shipped, laid out merged-/usr
    hello = tree.entries["usr/bin/hello"]
    assert (hello.kind, hello.mode, hello.data) == (FILE, 0o755, b"#!/bin/sh\necho hi\n")
    assert tree.entries["bin"].kind == SYMLINK and tree.entries["bin"].link == "usr/bin"
    assert tree.entries["usr/bin/hi"].link == "../../bin/hello"
    big = tree.entries["usr/share/doc/big"]
    assert big.data is None and big.source is not None and big.source.read_bytes() == BIG
    assert tree.entries["usr/share/doc/same"].kind == HARDLINK


def test_later_package_wins_in_name_order(tmp_path: Path) -> None:
    """Packages are read in threads but applied in name order, as dpkg-deb runs were."""
    debs = {name: build(tmp_path, name, files={"etc/shared": name.encode()}) for name in ("zz", "aa", "mm")}
    assert unpack(debs, tmp_path / "staging").tree.entries["etc/shared"].data == b"zz"


def damaged(path: Path, content: list[tuple[str, bytes]] | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else ar(content))
    return path


def broken(good: Path, case: str) -> tuple[list[tuple[str, bytes]] | bytes, str]:
    """The bytes (or ar members) of ``good`` damaged as ``case`` says, and the problem named."""
    members, data = ar_members(good), good.read_bytes()
    control_tar = io.BytesIO()
    with tarfile.open(fileobj=control_tar, mode="w") as archive:
        archive.addfile(tarfile.TarInfo("./md5sums"), io.BytesIO(b""))
    return {
        "not an ar": (b"PK\x03\x04 a zip", "not an ar archive"),
        "truncated": (data[:len(data) // 2], "truncated in its data.tar.xz member"),
        "bad header": (data[:8] + b"x" * 60 + data[68:], "bad ar member header at byte 8"),
        "no debian-binary": (members[1:], "its first member is not debian-binary"),
        "no control": ([members[0], members[2]], "it has no control.tar member"),
        "no data": (members[:2], "it has no data.tar member"),
        "unknown compression": ([*members[:2], ("data.tar.lz4", members[2][1])],
                                "unknown compression of its data.tar.lz4 member"),
        "no control file": ([members[0], ("control.tar", control_tar.getvalue()), members[2]],
                            "its control.tar has no control file"),
    }[case]


@pytest.mark.parametrize("case", ["not an ar", "truncated", "bad header", "no debian-binary", "no control",
                                  "no data", "unknown compression", "no control file"])
def test_damaged_deb_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    content, problem = broken(build(tmp_path), case)
    path = damaged(tmp_path / "damaged.deb", content)
    with pytest.raises(DreamError) as caught:
        unpack({"hello": path}, tmp_path / "staging")
    line = failure_line(caught.value, "layer:x/debian")  # what the task boundary prints
    assert line == f"Debian package hello: {path}: damaged .deb: {problem}"


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd"])
@pytest.mark.parametrize("how", ["zeroed", "cut"])
def test_member_that_does_not_decompress(tmp_path: Path, compression: str, how: str) -> None:
    """Bytes the codec refuses (each codec raises its own exception type) are one line too."""
    def spoiled(data: bytes) -> bytes:
        return data[:40] + bytes(len(data) - 80) + data[-40:] if how == "zeroed" else data[:len(data) // 2]

    good = build(tmp_path, compression=compression)
    members = [(n, spoiled(d) if n.startswith("data.tar") else d) for n, d in ar_members(good)]
    path = damaged(tmp_path / "spoiled.deb", members)
    line = rf"^Debian package hello: {path}: damaged \.deb: data\.tar\.\w+: "
    with pytest.raises(DreamError, match=line) as caught:
        unpack({"hello": path}, tmp_path / "staging")
    assert "\n" not in str(caught.value)
