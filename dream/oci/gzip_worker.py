"""A process that does nothing but compress gzip members (started by dream/oci/compress.py).

``python3 -S -P gzip_worker.py ISAL_DIR``: reads frames from stdin — 8 bytes of big-endian
length, then that many bytes — and answers each with one frame holding the bytes as one gzip
member, ISA-L level 1 (wbits 31: mtime 0, OS 255). It ends at end of input (its parent went away or closed
the pipe). It ignores SIGINT: Ctrl-C is its parent's to handle, and it runs in a session of
its own anyway. Standard library and isal only, and no import of dream: it starts in
milliseconds and its state is its own (`dream.oci.compress.gzip_member` says why that matters).
``-S`` skips ``site`` (the virtual environment's .pth files, dream's editable-install finder):
10 ms a start instead of 25, and a one-file change starts two; so ``ISAL_DIR``, the folder
that holds the parent's isal package, is put on the path, and the worker compresses with the
very isal that the parent's layer keys name.
"""

from __future__ import annotations

import signal
import struct
import sys
from typing import BinaryIO

if __name__ == "__main__" and len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
from isal import isal_zlib  # noqa: E402  (after the path it comes from)

HEADER = struct.Struct(">Q")


def read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes, or None at end of input before the first of them."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            if data:
                raise EOFError(f"input ended {size - len(data)} bytes before the frame's end")
            return None
        data += chunk
    return bytes(data)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while (header := read_exactly(source, HEADER.size)) is not None:
        (size,) = HEADER.unpack(header)
        data = read_exactly(source, size) if size else b""
        if data is None:
            raise EOFError("input ended inside a frame")
        out = isal_zlib.compress(data, 1, 31)
        sink.write(HEADER.pack(len(out)))
        sink.write(out)
        sink.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
