"""Parallel gzip members (issue 14): the bytes never depend on threads or timing, every reader
sees exactly the tar, and a failure anywhere in the pipeline stops it without a blob or a hang."""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import random
import subprocess
import threading
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import isal
import pytest
import zstandard

from dream.errors import DreamError
from dream.oci import layer as layer_module
from dream.oci import compress as compress_module
from dream.oci.compress import CODECS, MEMBER, Codec, CompressorDisagrees, agreed_member, cut
from dream.oci.layer import build_layer, encode
from dream.oci.tar import SourceChanged, tar_chunks
from dream.oci.tree import FILE, Entry, Tree
from dream.store import Store

GZIP = CODECS["gzip"]
HEADER = bytes.fromhex("1f8b08000000000000ff")  # deflate, no flags, mtime 0, OS 255: as before
STAGES = ("dream-diff-id", "dream-blob")


class Memory:
    """A blob writer that keeps the bytes (`encode` never commits)."""

    def __init__(self, fail_at: int = -1) -> None:
        self.parts: list[bytes] = []
        self.fail_at = fail_at

    def write(self, data: bytes) -> None:
        if len(self.parts) == self.fail_at:
            raise DreamError("cannot write to the store /s: No space left on device")
        self.parts.append(bytes(data))

    def commit(self) -> tuple[str, int]:
        raise AssertionError("encode does not commit")

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def sample(size: int, seed: int = 1) -> bytes:
    """Half text-like (compressible), half random, so members have real deflate blocks."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)) for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(200)) + rng.randbytes(1500)
    return bytes(out[:size])


def pieces(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    """``data`` in chunks of the given sizes (cycled), as a producer would yield it."""
    pos, cycle = 0, list(sizes)
    while pos < len(data):
        step = cycle[pos % len(cycle)]
        yield data[pos:pos + step]
        pos += step


def members(blob: bytes) -> list[bytes]:
    """The uncompressed bytes of each gzip member of ``blob``, checking each one's header."""
    out = []
    while blob:
        assert blob[:10] == HEADER
        member = zlib.decompressobj(31)
        out.append(member.decompress(blob))
        assert member.eof
        blob = member.unused_data
    return out


def no_stage_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name in STAGES]


def encoded(data: bytes, workers: int, codec: Codec = GZIP, chunk: int = 1 << 20) -> tuple[bytes, str]:
    blob = Memory()
    with ThreadPoolExecutor(workers) as pool:
        diff_id = encode(pieces(data, [chunk]), codec, blob, pool=pool)
    return blob.data, diff_id


def test_one_and_four_workers_write_the_same_bytes() -> None:
    data = sample(5 * MEMBER + 12345)
    one, four = encoded(data, 1), encoded(data, 4)
    assert one == four
    assert one[1] == hashlib.sha256(data).hexdigest()


def test_the_bytes_do_not_depend_on_how_the_tar_was_chunked() -> None:
    data = sample(3 * MEMBER + 7)
    blob = Memory()
    with ThreadPoolExecutor(3) as pool:
        encode(pieces(data, [1, 511, 70000, 1 << 20, 3 << 20]), GZIP, blob, pool=pool)
    assert blob.data == encoded(data, 2)[0]


def test_a_layer_is_members_of_fixed_size_that_every_reader_decompresses_to_the_tar(tmp_path: Path) -> None:
    data = sample(2 * MEMBER + 4000)
    (tmp_path / "big").write_bytes(data)
    tree = Tree()
    tree.add(Entry("opt/big", FILE, 0o644, size=len(data), source=tmp_path / "big"))
    tree.add_bytes("etc/small", b"small\n")
    tar = b"".join(tar_chunks(tree.sorted_entries(), 0))
    store = Store(tmp_path / "s").init()
    descriptor = build_layer(tree, GZIP, 0, store)
    blob = store.blob_path(descriptor.digest).read_bytes()
    assert descriptor.diffID == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert descriptor.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert [len(m) for m in members(blob)] == [MEMBER, MEMBER, len(tar) - 2 * MEMBER]
    assert gzip.decompress(blob) == tar
    assert subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True).stdout == tar


@pytest.mark.parametrize("size, count", [(1, 1), (MEMBER - 1, 1), (MEMBER, 1), (MEMBER + 1, 2),
                                         (2 * MEMBER, 2), (2 * MEMBER + 1, 3)])
def test_member_boundaries(size: int, count: int) -> None:
    data = sample(size)
    blob, diff_id = encoded(data, 2, chunk=4096)
    found = members(blob)
    assert len(found) == count and b"".join(found) == data
    assert [len(m) for m in found[:-1]] == [MEMBER] * (count - 1)
    assert diff_id == hashlib.sha256(data).hexdigest()


def test_an_empty_input_is_no_member_and_an_empty_layer_is_one(tmp_path: Path) -> None:
    assert encoded(b"", 2) == (b"", hashlib.sha256(b"").hexdigest())
    store = Store(tmp_path / "s").init()
    blob = store.blob_path(build_layer(Tree(), GZIP, 0, store).digest).read_bytes()
    assert members(blob) == [b"\0" * 1024]  # the end-of-archive blocks


def test_a_tar_of_exactly_one_member_is_one_member(tmp_path: Path) -> None:
    tree = Tree()
    tree.add_bytes("f", b"x" * (MEMBER - 1536))  # header 512 + data + end-of-archive 1024
    store = Store(tmp_path / "s").init()
    blob = store.blob_path(build_layer(tree, GZIP, 0, store).digest).read_bytes()
    assert [len(m) for m in members(blob)] == [MEMBER]


def test_cut_keeps_every_byte_at_fixed_offsets() -> None:
    assert list(cut([b"abc", b"", b"defg", b"h"], 3)) == [b"abc", b"def", b"gh"]
    assert list(cut([b"abcdef"], 3)) == [b"abc", b"def"]
    assert list(cut([b"", b""], 3)) == []


def test_the_gzip_fingerprint_is_not_the_one_stream_one() -> None:
    assert GZIP.fingerprint != f"isal-{isal.__version__}-gzip-1"  # old keys never meet new bytes
    assert str(MEMBER) in GZIP.fingerprint


def test_zstd_bytes_are_those_of_the_one_thread_loop() -> None:
    data = sample(3 * MEMBER)
    old = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=False).compressobj()
    expected = b"".join(old.compress(chunk) for chunk in pieces(data, [1 << 20])) + old.flush()
    blob, diff_id = encoded(data, 2, CODECS["zstd"])
    assert blob == expected and diff_id == hashlib.sha256(data).hexdigest()


# -- failures: one error, nothing committed, no thread left -----------------------------------
def changing_tree(tmp_path: Path) -> Tree:
    """A layer whose second file changes after the key: the tar stops several members in."""
    tree = Tree("r/l")
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(sample(3 * MEMBER, seed=ord(name)))
        tree.add(Entry(name, FILE, 0o644, size=3 * MEMBER, source=tmp_path / name,
                       sha256=hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()))
    (tmp_path / "b").write_bytes(sample(3 * MEMBER, seed=99))  # same size, other bytes
    return tree


def nothing_in(store: Store) -> None:
    assert list(store.blobs.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []


def test_a_source_that_changes_mid_stream_leaves_no_blob_and_no_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    with ThreadPoolExecutor(4) as pool:
        with pytest.raises(SourceChanged, match="changed while the layer was being built"):
            build_layer(changing_tree(tmp_path), GZIP, 0, store, pool=pool)
    nothing_in(store)
    assert no_stage_threads()


def test_a_failing_compressor_propagates_and_leaves_no_blob(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(data: bytes, lane: int) -> bytes:
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("compressor failed")
        return zlib.compress(data)

    monkeypatch.setattr(layer_module, "gzip_member", broken)
    store = Store(tmp_path / "s").init()
    tree = Tree()
    tree.add_bytes("f", sample(8 * MEMBER))
    with pytest.raises(MemoryError, match="compressor failed"):
        build_layer(tree, GZIP, 0, store)
    nothing_in(store)
    assert no_stage_threads()


def test_a_full_disk_stops_the_producer_early() -> None:
    read = []

    def producer() -> Iterator[bytes]:
        for _ in range(200):
            read.append(1)
            yield sample(MEMBER)

    with pytest.raises(DreamError, match="No space left on device"):
        encode(producer(), GZIP, Memory(fail_at=2))
    assert len(read) < 50  # stopped at its next piece, not after the whole layer
    assert no_stage_threads()


def test_an_interrupt_in_the_producer_does_not_hang_on_the_pool() -> None:
    def producer() -> Iterator[bytes]:
        yield from (sample(MEMBER, seed=n) for n in range(4))
        raise KeyboardInterrupt

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(KeyboardInterrupt):
            encode(producer(), GZIP, Memory(), pool=pool)
        assert pool.submit(lambda: 1).result(timeout=10) == 1  # the pool still works
    assert no_stage_threads()


def test_an_interrupt_sent_to_a_layer_thread_unwinds_it(tmp_path: Path) -> None:
    """As `dream.project.ThreadRunner` does on Ctrl-C: KeyboardInterrupt raised asynchronously
    in a doit thread that is writing a layer, wherever it is waiting."""
    store = Store(tmp_path / "s").init()
    started, outcome = threading.Event(), []

    def endless() -> Iterator[bytes]:
        piece = sample(MEMBER)
        while True:
            started.set()
            yield piece

    def layer() -> None:
        try:
            with store.blob_writer() as blob:
                encode(endless(), GZIP, blob)
        except KeyboardInterrupt:
            outcome.append("interrupted")

    thread = threading.Thread(target=layer)
    thread.start()
    assert started.wait(30)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident or 0),
                                               ctypes.py_object(KeyboardInterrupt))
    thread.join(60)
    assert not thread.is_alive() and outcome == ["interrupted"]
    nothing_in(store)
    assert no_stage_threads()


def done(value: bytes) -> Future[bytes]:
    future: Future[bytes] = Future()
    future.set_result(value)
    return future


def test_two_compressions_that_differ_are_settled_by_more_until_two_agree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The odd result of one run (what ISA-L sometimes gives) never reaches the blob."""
    later = iter([b"odd-again", b"usual"])
    monkeypatch.setattr(compress_module, "gzip_member", lambda data, lane: next(later))
    before = compress_module.disagreements()
    assert agreed_member(b"data", done(b"odd"), done(b"usual")) == b"usual"
    assert compress_module.disagreements() == before + 1


def test_two_equal_compressions_are_used_without_a_third(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compress_module, "gzip_member", lambda data, lane: pytest.fail("compressed a third time"))
    before = compress_module.disagreements()
    assert agreed_member(b"data", done(b"same"), done(b"same")) == b"same"
    assert compress_module.disagreements() == before


def test_a_compressor_that_never_agrees_fails_the_layer_without_a_blob(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = iter(range(1_000_000))
    monkeypatch.setattr(compress_module, "gzip_member", lambda data, lane: str(next(count)).encode())
    monkeypatch.setattr(layer_module, "gzip_member", compress_module.gzip_member)
    store = Store(tmp_path / "s").init()
    tree = Tree()
    tree.add_bytes("f", sample(2 * MEMBER))
    with pytest.raises(CompressorDisagrees, match="6 different results in 6 compressions"):
        build_layer(tree, GZIP, 0, store)
    nothing_in(store)
    assert no_stage_threads()


def test_every_member_is_compressed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(data: bytes, lane: int) -> bytes:
        calls.append((len(data), lane))
        return zlib.compress(data)

    monkeypatch.setattr(layer_module, "gzip_member", counted)
    encode(iter([sample(3 * MEMBER + 5)]), GZIP, Memory())
    assert sorted(calls) == sorted([(size, lane) for size in (MEMBER, MEMBER, MEMBER, 5) for lane in (0, 1)])


def test_the_two_compressions_of_a_member_are_two_processes_even_in_one_thread() -> None:
    """Two lanes of one thread are two workers: a process's odd bytes, given twice, never
    outvote another process."""
    from isal import isal_zlib

    data = sample(MEMBER, seed=5)
    assert compress_module.gzip_member(data, 0) == compress_module.gzip_member(data, 1) == \
        isal_zlib.compress(data, 1, 31)
    workers = compress_module._local.workers
    assert workers[0].process.pid != workers[1].process.pid


def test_an_exchange_broken_off_retires_its_worker_and_the_next_member_is_right() -> None:
    """A worker whose exchange was cut halfway (here its answer is never read) must not answer
    the next member with the old one's bytes: the thread gets a fresh worker."""
    from isal import isal_zlib

    first, second = sample(MEMBER, seed=3), sample(MEMBER, seed=4)
    compress_module.gzip_member(first)  # this thread's worker exists
    worker = compress_module._local.workers[0]

    def cut_off(size: int) -> bytes:
        raise KeyboardInterrupt

    worker._read = cut_off  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        worker.compress(first)
    assert worker.process.wait(timeout=10) != 0 and 0 not in compress_module._local.workers
    assert compress_module.gzip_member(second) == isal_zlib.compress(second, 1, 31)


def test_a_worker_that_dies_is_one_clear_error() -> None:
    compress_module.gzip_member(b"x")
    worker = compress_module._local.workers[0]
    worker.process.kill()
    worker.process.wait()
    with pytest.raises(compress_module.CompressorGone, match="the compressing process ended"):
        worker.compress(sample(MEMBER))
