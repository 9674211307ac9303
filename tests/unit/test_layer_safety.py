"""Pulled layers are checked for path traversal before anything unpacks them.

Small tars are built here with `tarfile` and compressed the ways registries serve them; the
clean one mixes everything real images contain (absolute symlinks, hard links, whiteouts,
devices), each bad one carries one classic escape. A 200 MB layer shows the check streams.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import zstandard

from dream.errors import DreamError
from dream.oci.compress import GZIP_MEDIA_TYPE, ZSTD_MEDIA_TYPE
from dream.oci.compress import decompressed
from dream.oci.safety import check_layer_file, check_members

REPO = Path(__file__).resolve().parents[2]
TAR_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
DOCKER_GZIP_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LABEL = "docker.io/library/debian@sha256:feed layer 1"


def d(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def f(name: str, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def sym(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def hard(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def dev(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


def tar_bytes(members: list[tarfile.TarInfo]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


def compress(data: bytes, media_type: str) -> bytes:
    if media_type == ZSTD_MEDIA_TYPE:
        return zstandard.ZstdCompressor().compress(data)
    if media_type.endswith("gzip"):
        return gzip.compress(data, mtime=0)
    return data


def layer(tmp_path: Path, members: list[tarfile.TarInfo], media_type: str) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(compress(tar_bytes(members), media_type))
    return path


CLEAN = [
    d("./"),
    d("./usr"), d("./usr/bin"), f("./usr/bin/python3.11", 10),
    sym("./usr/bin/python3", "python3.11"),
    sym("./usr/bin/python", "/usr/bin/python3"),  # absolute: resolved inside the container
    d("usr/lib"), d("usr/lib/x86_64-linux-gnu"),
    sym("usr/lib/x86_64-linux-gnu/libz.so", "../../../usr/lib/x86_64-linux-gnu/libz.so.1"),
    f("usr/lib/x86_64-linux-gnu/libz.so.1", 3),
    sym("lib", "usr/lib"),  # merged /usr: a symlink nothing in this layer goes through
    hard("usr/bin/python3-hard", "usr/bin/python3.11"),
    hard("usr/bin/python-link", "./usr/bin/python"),  # a hard link to a symlink is fine
    d("etc"), f("etc/.wh.motd"), f("etc/.wh..wh..opq"), f("etc/..data", 1), f("etc/a..b", 1),
    d("dev"), dev("dev/null"),
    sym("etc/mtab", "../proc/self/mounts"), sym("etc/here", "."), sym("etc/self", "./././"),
    sym("usr/up", ".."), d("usr/up2/"),
]

MEDIA_TYPES = [GZIP_MEDIA_TYPE, ZSTD_MEDIA_TYPE, TAR_MEDIA_TYPE, DOCKER_GZIP_MEDIA_TYPE]


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_a_clean_layer_passes_and_counts_its_entries(tmp_path: Path, media_type: str) -> None:
    assert check_layer_file(layer(tmp_path, CLEAN, media_type), media_type, LABEL) == len(CLEAN)


def test_check_members_takes_any_iterable_of_members() -> None:
    assert check_members(iter(CLEAN), LABEL) == len(CLEAN)
    assert check_members([], LABEL) == 0


BAD: dict[str, tuple[list[tarfile.TarInfo], str]] = {
    "dotdot": ([f("../evil")], "../evil"),
    "dotslash-dotdot": ([d("./"), f("./../evil")], "./../evil"),
    "absolute": ([f("/abs")], "/abs"),
    "absolute dir": ([d("/etc")], "/etc"),
    "climbs mid-path": ([d("a"), f("a/../../x")], "a/../../x"),
    "dotdot inside stays dotdot": ([f("a/b/../c")], "a/b/../c"),
    "symlink climbs out": ([sym("x", "../../..")], "x"),
    "nested symlink climbs out": ([d("a"), d("a/b"), sym("a/b", "../../../etc")], "a/b"),
    "symlink climbs out after going down": ([sym("a/b", "c/../../../x")], "a/b"),
    "write through absolute symlink": ([sym("link", "/etc"), f("link/passwd", 4)],
                                       "link/passwd"),
    "write through relative symlink": ([d("d"), sym("d/link", ".."), f("d/link/x")],
                                       "d/link/x"),
    "through symlink, dot spelling": ([sym("./link", "/etc"), d("./link/./cron.d/")],
                                      "./link/./cron.d/"),
    "replace symlink with a file": ([sym("link", "/etc/passwd"), f("link", 4)], "link"),
    "replace symlink with a dir": ([sym("link", "/etc"), d("link")], "link"),
    "hard link to dotdot": ([hard("h", "../x")], "h"),
    "hard link to absolute": ([hard("h", "/etc/shadow")], "h"),
    "hard link through symlink": ([sym("link", "/etc"), hard("h", "link/shadow")], "h"),
    "through hard link to symlink": ([sym("s", "/etc"), hard("h", "s"), f("h/passwd")],
                                     "h/passwd"),
    "symlink as the root": ([sym(".", "/etc")], "."),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_escape_is_refused_naming_layer_and_entry(case: str) -> None:
    members, entry = BAD[case]
    with pytest.raises(DreamError) as error:
        check_members([d("ok"), f("ok/file", 1), *members, f("after")], LABEL)
    message = str(error.value)
    assert message.startswith(f"{LABEL}: unsafe layer entry {entry!r}: "), message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("media_type", [GZIP_MEDIA_TYPE, ZSTD_MEDIA_TYPE])
def test_escapes_are_found_through_compression(tmp_path: Path, media_type: str) -> None:
    path = layer(tmp_path, [*CLEAN, sym("link", "/etc"), f("link/passwd", 4)], media_type)
    with pytest.raises(DreamError, match=r"unsafe layer entry 'link/passwd': goes through"):
        check_layer_file(path, media_type, LABEL)


def test_a_bad_entry_in_a_later_zstd_frame_is_seen(tmp_path: Path) -> None:
    """zstd:chunked layers are many frames: the check must read past the first."""
    data = tar_bytes([*CLEAN, f("../evil", 1)])
    cut = 4 * 512
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "blob"
    path.write_bytes(compressor.compress(data[:cut]) + compressor.compress(data[cut:]))
    with pytest.raises(DreamError, match=r"'\.\./evil'"):
        check_layer_file(path, ZSTD_MEDIA_TYPE, LABEL)


def test_a_corrupt_header_mid_layer_fails_instead_of_ending_the_check(tmp_path: Path) -> None:
    """tarfile alone would stop at the bad header and call the (unchecked) rest the end."""
    good = tar_bytes([d("a"), f("a/b", 1)])[:1536]  # three blocks, no end-of-archive
    bad = bytearray(tar_bytes([f("../evil", 1)]))
    bad[148:156] = b"0000000\0"  # a wrong header checksum
    path = tmp_path / "blob"
    path.write_bytes(good + bytes(bad))
    with pytest.raises(DreamError) as error:
        check_layer_file(path, TAR_MEDIA_TYPE, LABEL)
    assert str(error.value).startswith(f"{LABEL}: unreadable layer: bad tar header at byte 1536")


@pytest.mark.parametrize(("blob", "media_type"), [
    (b"not gzip at all", GZIP_MEDIA_TYPE),
    (gzip.compress(b"\0" * 100_000)[:-100], GZIP_MEDIA_TYPE),
    (b"not zstd at all" * 10, ZSTD_MEDIA_TYPE),
    (b"not a tar" * 100, TAR_MEDIA_TYPE),
])
def test_an_unreadable_blob_is_a_one_line_error(tmp_path: Path, blob: bytes,
                                                media_type: str) -> None:
    path = tmp_path / "blob"
    path.write_bytes(blob)
    with pytest.raises(DreamError) as error:
        check_layer_file(path, media_type, LABEL)
    assert str(error.value).startswith(f"{LABEL}: unreadable layer: ")
    assert "\n" not in str(error.value)


def test_an_empty_tar_has_no_entries(tmp_path: Path) -> None:
    assert check_layer_file(layer(tmp_path, [], GZIP_MEDIA_TYPE), GZIP_MEDIA_TYPE, LABEL) == 0


@pytest.mark.parametrize("media_type", [GZIP_MEDIA_TYPE, ZSTD_MEDIA_TYPE, TAR_MEDIA_TYPE])
def test_closing_the_decompressed_stream_closes_the_blob(tmp_path: Path, media_type: str,
                                                         ) -> None:
    path = layer(tmp_path, CLEAN, media_type)
    with open(path, "rb") as raw:
        with decompressed(raw, media_type) as stream:
            assert stream.read() == tar_bytes(CLEAN)
        assert raw.closed


class Zeros(io.RawIOBase):
    """An endless run of zero bytes that never exists in memory as a whole."""

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        buffer[:] = bytes(len(buffer))
        return len(buffer)

    def readable(self) -> bool:
        return True


BIG = 200 * 1024 * 1024

MEASURE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dream.oci import safety
    from dream.oci.safety import check_layer_file
    safety.MAX_RATIO = 10**9  # zeros pack far past the bomb guard's ratio: this measures memory
    def peak():  # VmHWM: ru_maxrss survives exec and would start at the parent's size
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    before = peak()
    count = check_layer_file(Path(sys.argv[1]), sys.argv[2], "big")
    after = peak()
    print(count, (after - before) * 1024)  # VmHWM is in kB
""")


@pytest.mark.parametrize("media_type", [GZIP_MEDIA_TYPE, ZSTD_MEDIA_TYPE])
def test_a_200_mb_layer_is_checked_in_flat_memory(tmp_path: Path, media_type: str) -> None:
    """Measured in a fresh interpreter: the test process's own peak would hide any growth."""
    path = tmp_path / "big"
    with open(path, "wb") as out:
        if media_type == ZSTD_MEDIA_TYPE:
            sink = zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False)
        else:
            sink = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0)
        with sink, tarfile.open(fileobj=sink, mode="w|") as archive:
            archive.addfile(d("data"))
            archive.addfile(f("data/zeros", BIG), io.BufferedReader(Zeros()))
    assert path.stat().st_size < BIG // 100
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), media_type], cwd=REPO,
                            capture_output=True, text=True, check=True)
    count, growth = map(int, result.stdout.split())
    assert count == 2
    assert growth < 50 * 1024 * 1024, f"peak memory grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize("media_type", [GZIP_MEDIA_TYPE, ZSTD_MEDIA_TYPE])
def test_a_decompression_bomb_is_refused(tmp_path: Path, media_type: str) -> None:
    from dream.oci import safety
    bomb = layer(tmp_path, [f("zeros", 8 * 2**20)], media_type)  # 8 MiB of one byte: a few KB packed
    assert bomb.stat().st_size < 64 * 2**10
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(safety, "MIN_ALLOWANCE", 2**20)  # the real floor is 64 MiB
        with pytest.raises(DreamError, match=r"^docker.io/library/debian@sha256:feed layer 1: the layer expands "
                                             r"past [\d,]+ bytes \(200× its compressed size \+ 1 MiB\): refused"):
            check_layer_file(bomb, media_type, LABEL)
    assert check_layer_file(bomb, media_type, LABEL) == 1  # within the documented floor


def test_the_expansion_limit_is_a_ratio_with_a_floor_and_a_ceiling() -> None:
    from dream.oci.safety import MAX_EXPANDED, expansion_limit
    assert expansion_limit(0) == 64 * 2**20
    assert expansion_limit(10 * 2**20) == 200 * 10 * 2**20 + 64 * 2**20
    assert expansion_limit(10 * 2**40) == MAX_EXPANDED
