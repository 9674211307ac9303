"""The two ways dream hashes: a file's bytes, and the one JSON spelling it writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)  # one buffer for the whole file: no 1 MiB allocation per read,
    view = memoryview(buffer)    # which fragments the heap of a process hashing gigabytes
    with open(path, "rb") as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """The one JSON spelling dream hashes and writes: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
