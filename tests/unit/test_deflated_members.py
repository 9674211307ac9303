"""Wheel members kept deflated (issue 14): a gzip layer takes a big wheel member's deflate
stream from the zip as one gzip member of its own, instead of compressing its content again.
Every reader still sees exactly the tar; the stream's bytes are the wheel's; damage, a wrong
size, or bytes after the stream never reach a blob."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import subprocess
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from isal import igzip

from dream.errors import DreamError
from dream.oci.compress import CODECS, DEFLATED_FROM, GZIP_HEADER
from dream.oci.layer import build_layer
from dream.oci.tar import DeflatedFile, SourceChanged, tar_chunks, tar_items
from dream.oci.tree import FILE, Entry, Tree
from dream.oci.zipmember import INFLATED, OpenArchive, RawDeflate
from dream.store import Store

GZIP = CODECS["gzip"]
BIG = DEFLATED_FROM * 5 + 123


def content(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)) for _ in range(200)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) if rng.random() < 0.7 else rng.randbytes(16)
    return bytes(out[:size])


def wheel(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, method) in members.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, method)
    return path


def tree_of(path: Path, members: dict[str, bytes], lie_about: str = "") -> Tree:
    tree = Tree("test/wheel")
    for name, data in members.items():
        digest = hashlib.sha256(b"lie" if name == lie_about else data).hexdigest()
        tree.entries[name] = Entry(name, FILE, 0o644, size=len(data), source=path, member=name, sha256=digest)
    return tree


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    members = {"pkg/big.so": (content(BIG, 1), zipfile.ZIP_DEFLATED),
               "pkg/small.py": (content(DEFLATED_FROM - 1, 2), zipfile.ZIP_DEFLATED),
               "pkg/stored.bin": (content(BIG, 3), zipfile.ZIP_STORED),
               "pkg/zeros": (bytes(3 << 20), zipfile.ZIP_DEFLATED)}  # inflates 1000:1, read in pieces
    return wheel(tmp_path / "pkg-1.0-py3-none-any.whl", members), {k: v[0] for k, v in members.items()}


def members_of(blob: bytes) -> list[bytes]:
    """The gzip members of ``blob``, each as its bytes."""
    out, rest = [], blob
    while rest:
        reader = zlib.decompressobj(31)
        reader.decompress(rest)
        used = len(rest) - len(reader.unused_data)
        out.append(rest[:used])
        rest = reader.unused_data
    return out


def test_a_big_deflated_member_is_its_wheels_deflate_stream_and_readers_see_the_tar(
        tmp_path: Path, sample: tuple[Path, dict[str, bytes]]) -> None:
    path, members = sample
    tree = tree_of(path, members)
    tar = b"".join(tar_chunks(tree.sorted_entries(), 0, tree.label))
    store = Store(tmp_path / "store").init()
    descriptor = build_layer(tree, GZIP, 0, store)
    blob = store.blob_path(descriptor.digest).read_bytes()
    assert descriptor.diffID == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert gzip.decompress(blob) == tar and igzip.decompress(blob) == tar
    assert subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True).stdout == tar
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("pkg/big.so")
        with open(path, "rb") as raw:
            raw.seek(info.header_offset + 30 + len(info.filename.encode()) + len(info.extra))
            stream = raw.read(info.compress_size)
    kept = [m for m in members_of(blob) if m[10:-8] == stream]
    assert kept == [GZIP_HEADER + stream + zlib.crc32(members["pkg/big.so"]).to_bytes(4, "little")
                    + len(members["pkg/big.so"]).to_bytes(4, "little")]


def test_only_big_deflated_members_come_as_deflate_streams(sample: tuple[Path, dict[str, bytes]]) -> None:
    path, members = sample
    tree = tree_of(path, members)
    kept = [item.entry.path for item in tar_items(tree.sorted_entries(), 0, "", DEFLATED_FROM)
            if isinstance(item, DeflatedFile)]
    assert kept == ["pkg/big.so", "pkg/zeros"]  # not the small one, not the stored one
    assert all(isinstance(item, bytes) for item in tar_items(tree.sorted_entries(), 0, "", 0))


def test_the_layer_is_the_same_bytes_every_time(tmp_path: Path, sample: tuple[Path, dict[str, bytes]]) -> None:
    path, members = sample
    first = build_layer(tree_of(path, members), GZIP, 0, Store(tmp_path / "a").init())
    second = build_layer(tree_of(path, members), GZIP, 0, Store(tmp_path / "b").init())
    assert first == second


def test_a_kept_member_is_checked_by_its_crc_and_size_a_compressed_one_by_its_record(
        tmp_path: Path, sample: tuple[Path, dict[str, bytes]]) -> None:
    path, members = sample
    store = Store(tmp_path / "store").init()
    with pytest.raises(SourceChanged, match="pkg/small.py is not what the wheel's RECORD says"):
        build_layer(tree_of(path, members, lie_about="pkg/small.py"), GZIP, 0, store)
    assert not list((store.root / "blobs" / "sha256").glob("*"))
    build_layer(tree_of(path, members, lie_about="pkg/big.so"), GZIP, 0, store)  # its CRC is right
    tree = tree_of(path, members)
    tree.entries["pkg/big.so"] = replace(tree.entries["pkg/big.so"], size=BIG - 1)
    with pytest.raises(SourceChanged, match=r"pkg/big.so is not what .* \(changed size"):
        build_layer(tree, GZIP, 0, Store(tmp_path / "other").init())


def test_a_damaged_deflate_stream_is_one_clear_error(tmp_path: Path, sample: tuple[Path, dict[str, bytes]]) -> None:
    path, members = sample
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("pkg/big.so")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    damaged = tmp_path / "damaged.whl"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DreamError, match=r"cannot read pkg/big.so of .*damaged.whl: (damaged deflate data|CRC-32)"):
        build_layer(tree_of(damaged, members), GZIP, 0, Store(tmp_path / "store").init())


def test_bytes_after_the_deflate_stream_are_not_kept() -> None:
    data = content(300_000, 4)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = compressor.compress(data) + compressor.flush()
    raw = RawDeflate(io.BytesIO(stream + b"trailing junk"), 0, len(stream) + 13, zlib.crc32(data))
    pieces = list(raw.pieces())
    assert b"".join(d for d, _ in pieces) == stream
    assert b"".join(p for _, p in pieces) == data


def test_a_stream_that_inflates_a_thousandfold_comes_in_bounded_pieces() -> None:
    data = bytes(40 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = compressor.compress(data) + compressor.flush()
    pieces = list(RawDeflate(io.BytesIO(stream), 0, len(stream), zlib.crc32(data)).pieces())
    assert b"".join(p for _, p in pieces) == data and b"".join(d for d, _ in pieces) == stream
    assert max(len(p) for _, p in pieces) <= INFLATED


def test_a_truncated_stream_and_a_wrong_crc_are_refused() -> None:
    data = content(300_000, 5)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = compressor.compress(data) + compressor.flush()
    with pytest.raises(zipfile.BadZipFile, match="truncated"):
        list(RawDeflate(io.BytesIO(stream[:-100]), 0, len(stream) - 100, zlib.crc32(data)).pieces())
    with pytest.raises(zipfile.BadZipFile, match="CRC-32"):
        list(RawDeflate(io.BytesIO(stream), 0, len(stream), zlib.crc32(data) ^ 1).pieces())


def test_the_fingerprint_names_the_threshold() -> None:
    assert GZIP.fingerprint.endswith(f"-deflated-from-{DEFLATED_FROM}")
    assert CODECS["zstd"].deflated_from == 0  # zstd compresses everything itself


def test_a_stream_reads_from_its_own_start_whatever_the_shared_handle_read_since(
        sample: tuple[Path, dict[str, bytes]]) -> None:
    path, members = sample
    archive = OpenArchive(str(path))
    try:
        raw = archive.deflated("pkg/big.so")
        assert raw is not None
        with archive.open("pkg/stored.bin") as other:  # moves the handle they share
            assert other.read(BIG) == members["pkg/stored.bin"]
        assert b"".join(plain for _, plain in raw.pieces()) == members["pkg/big.so"]
        assert archive.deflated("pkg/stored.bin") is None
    finally:
        archive.close()
