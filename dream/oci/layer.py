"""One streaming pass: tree → deterministic tar → compressor → blob, hashing on the way.

The uncompressed bytes are hashed for the diff_id and never stored; the compressed bytes are
hashed as they are written, so the blob's digest is known the moment it lands in the store.
A file that changed since the layer's key was computed (`tar.SourceChanged`) or a store that
cannot be written (a full disk) stops the pass with one line; the temporary blob is removed and
nothing is committed.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from dream.oci.blobs import BlobSink
from dream.oci.compress import Codec
from dream.oci.descriptor import Descriptor
from dream.oci.tar import tar_chunks
from dream.oci.tree import Tree

Progress = Callable[[int], None]


def build_layer(tree: Tree, codec: Codec, mtime: int, sink: BlobSink,
                progress: Progress | None = None) -> Descriptor:
    """Write ``tree`` as one compressed layer blob; return its descriptor (with diffID)."""
    entries = tree.sorted_entries()
    diff_id = hashlib.sha256()
    compressor = codec.compressor()
    with sink.blob_writer() as blob:
        for chunk in tar_chunks(entries, mtime, tree.label):
            diff_id.update(chunk)
            blob.write(compressor.compress(chunk))
            if progress:
                progress(len(chunk))
        blob.write(compressor.flush())
        digest, size = blob.commit()
    return Descriptor(codec.media_type, digest, size, diffID="sha256:" + diff_id.hexdigest())


def tree_size(tree: Tree) -> int:
    """Bytes of file content in ``tree`` (for progress bars)."""
    return sum(entry.size for entry in tree.entries.values())
