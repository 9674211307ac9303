"""Pinned, deterministic layer compressors.

gzip is ISA-L at level 1, written as **members**: the tar stream is cut every `MEMBER` (1 MiB)
uncompressed bytes and each piece becomes one complete gzip member (mtime 0, OS 255, as
before), compressed twice, by two worker processes that do nothing else (`gzip_member`), fed by
the process-wide `shared_pool` (a thread a core), and kept where the two agree
(`agreed_member`); the members are concatenated in order. Concatenated members are one valid
gzip file (RFC 1952 §2.2) and a valid OCI layer:
Go's compress/gzip (Docker, containerd, skopeo, umoci), Python's gzip and isal's igzip read
them as one stream. The bytes depend only on the tar and `MEMBER`, never on the thread count or
timing.

A wheel's file of `DEFLATED_FROM` bytes or more that the wheel holds deflated is not
compressed at all: its deflate stream, as the zip holds it, becomes one gzip member between
ISA-L's fixed header and a trailer of the content's CRC-32 and size (`cut`,
`dream.oci.layer`). Most of a GPU image's bytes are such files (CUDA's, torch's shared
libraries), so most of its compression is the wheels' own, done once by whoever built them:
those bytes are pinned by the wheel's sha256, the same on every machine, and smaller than
ISA-L level 1 makes them (zlib level 6, mostly). The content is still inflated, for the
diff_id and the zip's CRC-32. 64 KiB: each such file ends the member before it early (a
shorter member, 18 bytes and a restarted window), which is noise from there up.

1 MiB was measured (bench/compress_bench.py, the cuBLAS tar of 856 MB): the blob is 0.018 %
larger than one ISA-L stream (each member restarts the 32 KiB window and adds 18 bytes of
header and trailer); 256 KiB costs 0.1 %, 2–8 MiB save nothing worth their memory and give
small layers fewer members to spread over the cores, and 1 MiB is what the tar writer reads.
Compression runs in its own thread beside the two sha256s and the blob write (each a thread of
its own, `dream.oci.layer`), so the layer's producer never waits for them; members let
compression use every core. ISA-L in a busy process is not reliably deterministic
(`gzip_member`), so it runs in processes of its own, and every member is compressed twice:
half the throughput, the same bytes every build.

zstd is level 3 in zstd's own multi-threaded mode, one stream, whose output does not depend
on the thread count; it goes through the same pipeline, so its hashing and writing no longer
sit in the calling thread (same bytes as before). Measured on the same tar and machine: zstd
alone 203 MB/s, the layer 115 MB/s before and 125 MB/s now, at 1.8× zstd's CPU seconds: zstd
level 3 costs 1.7× ISA-L's CPU, so on few cores it is zstd, not the hashing, that limits.
Library versions and `MEMBER` are part of every layer's input key, so an upgrade or a new
member size rebuilds layers instead of silently changing digests.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterable, Iterator, Protocol, cast

from dream.oci.mediatypes import LAYER_GZIP as GZIP_MEDIA_TYPE
from dream.oci.mediatypes import LAYER_ZSTD as ZSTD_MEDIA_TYPE

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future, ThreadPoolExecutor

    from dream.oci.tar import DeflatedFile

MEMBER = 1 << 20  # uncompressed bytes per gzip member: part of the gzip fingerprint
DEFLATED_FROM = 64 << 10  # wheel members from this size keep their own deflate stream (`cut`)


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


@dataclass(frozen=True)
class Codec:
    """A compression choice: its name, media type, and what pins its output bytes.

    ``member`` > 0: the tar is cut every ``member`` bytes and each piece is compressed alone
    (`gzip_member`, in parallel); 0: one stream from `compressor` (zstd, threaded inside).
    ``pins`` gives the `fingerprint` on first use: it imports the codec's library for its
    version, and every doit command imports this module, mostly to compress nothing (zstandard
    alone costs a no-op build 3-4 ms)."""

    name: str
    media_type: str
    pins: Callable[[], str]
    member: int = 0
    deflated_from: int = 0  # wheel members this big or bigger keep their deflate stream (`cut`)

    @cached_property
    def fingerprint(self) -> str:
        """The library versions and settings behind the bytes: part of every layer's key."""
        return self.pins()

    def compressor(self) -> Compressor:
        """The streaming compressor of a codec without members."""
        assert not self.member, self.name
        import zstandard
        return zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=False).compressobj()


def _gzip_pins() -> str:
    import isal
    return f"isal-{isal.__version__}-gzip-1-members-{MEMBER}-deflated-from-{DEFLATED_FROM}"


def _zstd_pins() -> str:
    import zstandard
    return f"zstandard-{zstandard.__version__}-libzstd-{'.'.join(map(str, zstandard.ZSTD_VERSION))}-3-mt"


CODECS = {
    "gzip": Codec("gzip", GZIP_MEDIA_TYPE, _gzip_pins, MEMBER, DEFLATED_FROM),
    "zstd": Codec("zstd", ZSTD_MEDIA_TYPE, _zstd_pins),
}


def gzip_member(data: bytes, lane: int = 0) -> bytes:
    """``data`` as one complete gzip member, ISA-L level 1, compressed by this thread's
    worker process for ``lane`` (`GzipWorker`): each compression of one member has a lane of
    its own, so the vote (`agreed_member`) always compares two processes.

    Not in this process: in a busy build process ISA-L now and then gives other (valid) bytes
    for the same input, and the same odd bytes twice in a row (the state behind it, whatever
    it is, lasts within a process), so that one 1 MiB member in a few thousand changed a
    layer's digest in about one gpu-image build of six, twice in CI; a process that only
    compresses gave them far more rarely, and then, when the pool ran both compressions of
    a member in one thread, twice from that one worker (a gpu-smoke build on an AMD EPYC,
    2026-12-02): hence a worker per lane. wbits 31 = gzip container; ISA-L writes mtime 0 and
    OS 255, so no clock leaks in."""
    workers: dict[int, GzipWorker] | None = getattr(_local, "workers", None)
    if workers is None or _local.owner != os.getpid():  # a forked child starts workers of its own
        workers = _local.workers = {}
        _local.owner = os.getpid()
    worker = workers.get(lane)
    if worker is None:
        worker = workers[lane] = GzipWorker(lane)
    return worker.compress(data)


class GzipWorker:
    """A ``gzip_worker.py`` process of this thread's: one member in, its gzip bytes out, over
    pipes in 8-byte length frames. Its own session (Ctrl-C is ours to handle); it ends when
    we close its input, or exit."""

    SCRIPT = str(Path(__file__).with_name("gzip_worker.py"))

    def __init__(self, lane: int = 0) -> None:
        import subprocess
        import sys

        import isal
        self.owner, self.lane = os.getpid(), lane
        isal_dir = str(Path(isal.__file__).resolve().parent.parent)  # the worker runs without site (-S)
        self.process = subprocess.Popen([sys.executable, "-S", "-P", self.SCRIPT, isal_dir], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, start_new_session=True)
        _workers.append(self)
        for pipe in (self.process.stdin, self.process.stdout):
            try:  # a member in one write: 64 KiB pipes cost a switch between the processes each
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[union-attr]
            except OSError:
                pass  # above /proc/sys/fs/pipe-max-size: slower, the same bytes

    def compress(self, data: bytes) -> bytes:
        """One exchange; anything that breaks it off halfway (an error, an interrupt) retires
        this worker, so that no later member is answered with an earlier one's bytes."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(len(data).to_bytes(8, "big"))
            self.process.stdin.write(data)
            self.process.stdin.flush()
            size = int.from_bytes(self._read(8), "big")
            return self._read(size)
        except BaseException as exc:
            self.process.kill()
            workers = getattr(_local, "workers", {})
            if workers.get(self.lane) is self:
                del workers[self.lane]
            if isinstance(exc, (OSError, EOFError)):
                code = self.process.wait()
                raise CompressorGone(f"gzip: the compressing process ended (exit code {code}): {exc}") from None
            raise

    def _read(self, size: int) -> bytes:
        assert self.process.stdout is not None
        data = self.process.stdout.read(size)
        if len(data) != size:
            raise EOFError(f"{len(data)} of {size} bytes")
        return data

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


class CompressorGone(RuntimeError):
    """A compressing process ended (killed, out of memory) before it answered."""


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python 3.10+ names it
PIPE_SIZE = 1 << 20
_local = threading.local()
_workers: list[GzipWorker] = []


@atexit.register
def _close_workers() -> None:
    for worker in _workers:
        try:
            if worker.owner == os.getpid():
                worker.close()
        except OSError:
            pass


VOTES = 2  # equal compressions of a member needed before its bytes are used
ATTEMPTS = 6  # compressions of one member before the layer fails
_disagreements = 0


class CompressorDisagrees(RuntimeError):
    """No two of `ATTEMPTS` compressions of one member gave the same bytes."""


def agreed_member(data: bytes, first: Future[bytes], second: Future[bytes]) -> bytes:
    """The bytes that two compressions of ``data`` agree on: ``first`` and ``second`` (two
    tasks of the pool, lanes 0 and 1, so two worker processes), then more until some result
    has `VOTES`, each from a lane (a process) of its own.

    Compression is in worker processes (`gzip_member` says why); the vote stays as the check
    that they hold to it: a disagreement is counted (`disagreements`) and settled, and six
    results without two equal fail the layer instead of writing bytes no other build would."""
    global _disagreements
    outputs = [first.result(), second.result()]
    while True:
        for out in outputs:
            if outputs.count(out) >= VOTES:
                if len(outputs) > VOTES:
                    with _pool_lock:
                        _disagreements += 1
                return out
        if len(outputs) == ATTEMPTS:
            raise CompressorDisagrees(f"gzip: ISA-L gave {len(set(outputs))} different results in "
                                      f"{ATTEMPTS} compressions of one {len(data):,}-byte member")
        outputs.append(gzip_member(data, len(outputs)))  # a process that has not answered yet


def disagreements() -> int:
    """Members of this process whose first two compressions differed (see `agreed_member`)."""
    return _disagreements


def cut(chunks: Iterable[bytes | DeflatedFile], size: int) -> Iterator[bytes | DeflatedFile]:
    """``chunks`` re-cut at every ``size`` bytes of the stream: pieces of exactly ``size``,
    the last one shorter, none empty. Where members start must not depend on how the tar
    writer happened to chunk its output.

    A `DeflatedFile` (a wheel member that is already deflated) passes through as it is and
    becomes a gzip member of its own: the piece before it ends there, shorter, and the next
    starts after it. Where members start then depends on the files as well, and still
    only on the layer's contents.

    Each byte is copied once (views, then one join): a copy holds the GIL, which the pool's
    threads and the hashing threads need back between their calls."""
    parts: list[memoryview] = []
    held = 0
    for chunk in chunks:
        if not isinstance(chunk, bytes):
            if held:
                yield b"".join(parts)
                parts, held = [], 0
            yield chunk
            continue
        view = memoryview(chunk)
        while len(view) >= size - held:
            parts.append(view[:size - held])
            view = view[size - held:]
            yield b"".join(parts)
            parts, held = [], 0
        if view:
            parts.append(view)
            held += len(view)
    if held:
        yield b"".join(parts)


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS 255: ISA-L's


def gzip_trailer(crc: int, size: int) -> bytes:
    """The 8 bytes that end a gzip member: the content's CRC-32 and its size mod 2^32."""
    return crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def shared_pool() -> Executor:
    """The compressing threads of this process (one a core), shared by every layer written at
    once. Each member is compressed twice in it (`agreed_member`). Created on first use; its
    idle threads end with the interpreter."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor
            _pool = ThreadPoolExecutor(usable_cores(), thread_name_prefix="dream-compress")
        return _pool


def decompressed(raw: IO[bytes], media_type: str) -> IO[bytes]:
    """The uncompressed stream of a layer blob ``raw`` with ``media_type``; it owns ``raw``.

    The one place that maps a layer media type to its decompressor, so that reading our own
    layers and checking pulled ones can never disagree about what a blob contains. Closing the
    result closes ``raw`` whatever the type. zstd reads fill across frame boundaries instead of
    coming back short at each one: zstd:chunked layers (as pushed by podman) are many frames;
    igzip reads every gzip member (dream's own layers are many).
    """
    if media_type == ZSTD_MEDIA_TYPE:
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True,
                                                          read_across_frames=True)
    if media_type.endswith(("+gzip", ".gzip")):  # OCI, Docker v2
        from isal import igzip
        stream = igzip.IGzipFile(fileobj=raw, mode="rb")
        # GzipFile never closes a fileobj it was given; `myfileobj` is what it closes itself.
        stream.myfileobj = raw  # type: ignore[assignment]
        return cast(IO[bytes], stream)  # a BufferedIOBase, which typeshed does not count as IO
    return raw
