"""One streaming pass: tree → deterministic tar → compressor → blob, hashing on the way.

The uncompressed bytes are hashed for the diff_id and never stored; the compressed bytes are
hashed as they are written, so the blob's digest is known the moment it lands in the store.

The pass is a pipeline, so that no stage waits for another: the calling thread reads the tar
and cuts it into members; each is compressed twice in the shared pool
(`dream.oci.compress.shared_pool`) and the blob gets the bytes both agree on
(`dream.oci.compress.agreed_member`); the diff_id sha256 and the blob write (its sha256 and the
file write) each run in an ordered thread of their own, since both must see the bytes in
order. A wheel's file that keeps its own deflate stream (`dream.oci.compress.DEFLATED_FROM`)
is inflated in the calling thread for the diff_id while its stream goes to the writer as it
is. zstd has no members: its compressor, threaded inside, is called in order in the blob
writer's thread. At most `depth` pieces wait at each stage, so memory stays bounded (at most
about 3 × depth MiB per layer: pieces waiting at both stages, and their compressed bytes).
The bytes do not depend on the thread count or timing: members are cut at fixed offsets of the
tar and written in order.

A file that changed since the layer's key was computed (`tar.SourceChanged`), a store that
cannot be written (a full disk) or a failing compressor stops the pass with that error; the
other stages are stopped and waited for, the temporary blob is removed and nothing is
committed. Ctrl-C does the same.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import deque
from concurrent.futures import Executor, Future
from functools import partial
from typing import Callable, Generic, Iterable, TypeVar

from dream.oci.blobs import BlobSink, BlobWriter
from dream.oci.compress import (GZIP_HEADER, Codec, agreed_member, cut, gzip_member, gzip_trailer, shared_pool,
                                usable_cores)
from dream.oci.descriptor import Descriptor
from dream.oci.tar import DeflatedFile, tar_items
from dream.oci.tree import Tree

Progress = Callable[[int], None]
Item = TypeVar("Item")


def build_layer(tree: Tree, codec: Codec, mtime: int, sink: BlobSink,
                progress: Progress | None = None, pool: Executor | None = None) -> Descriptor:
    """Write ``tree`` as one compressed layer blob; return its descriptor (with diffID).

    ``pool`` compresses gzip members (default: the process's shared pool)."""
    entries = tree.sorted_entries()
    with sink.blob_writer() as blob:
        diff_id = encode(tar_items(entries, mtime, tree.label, codec.deflated_from), codec, blob, progress, pool)
        digest, size = blob.commit()
    return Descriptor(codec.media_type, digest, size, diffID="sha256:" + diff_id)


def tree_size(tree: Tree) -> int:
    """Bytes of file content in ``tree`` (for progress bars)."""
    return sum(entry.size for entry in tree.entries.values())


def depth() -> int:
    """Pieces allowed to wait at each stage: enough to keep the compressing thread and the
    other stages busy while the tar producer runs ahead."""
    return usable_cores() + 2


def encode(chunks: Iterable[bytes | DeflatedFile], codec: Codec, blob: BlobWriter,
           progress: Progress | None = None, pool: Executor | None = None) -> str:
    """Compress the stream ``chunks`` into ``blob`` (not committed); the hex sha256 of the
    uncompressed stream. A `DeflatedFile` (gzip only) is written as a gzip member made of its
    own deflate stream. Any failure stops every stage before it is raised."""
    diff_id = hashlib.sha256()
    hasher: Ordered[bytes] = Ordered(diff_id.update, "dream-diff-id")
    writer: Ordered[Callable[[], bytes]] = Ordered(lambda pending: blob.write(pending()), "dream-blob")
    started: deque[Future[bytes]] = deque()
    try:
        if codec.member:
            executor = pool or shared_pool()
            for piece in cut(chunks, codec.member):
                if isinstance(piece, DeflatedFile):
                    _put_deflated(piece, hasher, writer, progress)
                    continue
                hasher.put(piece)
                started += (executor.submit(gzip_member, piece, 0), executor.submit(gzip_member, piece, 1))
                writer.put(partial(agreed_member, piece, started[-2], started[-1]))
                while started and started[0].done():  # kept only to be cancelled
                    started.popleft()
                if progress:
                    progress(len(piece))
        else:
            compressor = codec.compressor()  # zstd: ordered calls, in the writer's thread
            for chunk in chunks:
                assert isinstance(chunk, bytes), "deflate streams are kept for gzip only"
                hasher.put(chunk)
                writer.put(partial(compressor.compress, chunk))
                if progress:
                    progress(len(chunk))
            writer.put(compressor.flush)
        hasher.close()
        writer.close()
    except BaseException:
        for future in started:
            future.cancel()
        hasher.abort()
        writer.abort()
        raise
    return diff_id.hexdigest()


def _put_deflated(file: DeflatedFile, hasher: Ordered[bytes], writer: Ordered[Callable[[], bytes]],
                  progress: Progress | None) -> None:
    """``file`` as one gzip member: the fixed header, its deflate stream as the wheel holds
    it, the trailer; its content goes to the diff_id. No compression: the stream is part of
    the pinned wheel, so the bytes are the same on every build."""
    writer.put(partial(_given, GZIP_HEADER))
    for deflate, plain in file.pieces():
        if deflate:
            writer.put(partial(_given, deflate))
        if plain:
            hasher.put(plain)
            if progress:
                progress(len(plain))
    writer.put(partial(_given, gzip_trailer(file.crc, file.size)))


def _given(data: bytes) -> bytes:
    return data


class Ordered(Generic[Item]):
    """A thread that applies ``work`` to items in the order they were put, at most `depth`
    of them waiting (a full queue makes `put` wait: that is the memory bound).

    A failure in ``work`` is kept and raised in the putting thread, at its next `put` or at
    `close`; after one, the thread only drains the queue, so a `put` never waits forever."""

    def __init__(self, work: Callable[[Item], object], name: str) -> None:
        self._work = work
        self._queue: queue.Queue[Item | None] = queue.Queue(depth())  # None: the end
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and not self._stopped:
                try:
                    self._work(item)
                except BaseException as exc:  # raised where the pass is driven, not lost here
                    self._error = exc

    def put(self, item: Item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every item put is done; raise the failure of any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Skip the items still waiting, finish the one in hand, and wait for the thread."""
        self._stopped = True
        if self._thread.is_alive():
            self._queue.put(None)  # room comes: the thread drains without working
        self._thread.join()
