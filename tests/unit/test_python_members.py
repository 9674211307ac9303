"""Member lists of wheels read without the wheels (`dream.python.members`, `rangefile`).

The HTTP server here is a unit-test stand-in for an index's file host (our own range logic is
under test); the real index is exercised by tests/integration/test_python_lock.py.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dream.python import rangefile
from dream.python.members import cached_listing, listing_of, members_dir
from dream.python.rangefile import NoRanges, RangeFile
from dream.python.resolve import Wheel

SERVED: dict[str, bytes] = {}
RANGES = {"on": True}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        data = SERVED[self.path]
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if not RANGES["on"] or not wanted:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what a range reader must do with a 200
            return
        first, last = wanted.groups()
        start, end = (len(data) - int(last), len(data)) if not first else (int(first), int(last) + 1)
        start = max(start, 0)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        self.wfile.write(data[start:end])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def big_wheel(path: Path, members: int = 3000, payload: int = 8_000_000) -> bytes:
    """A wheel-shaped zip: one large incompressible member and many small ones."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("pkg/big.bin", os.urandom(payload))
        for index in range(members):
            archive.writestr(f"pkg/sub/module_{index:05d}.py", "x = 1\n")
        archive.writestr("pkg/lib/libthing.so.1", b"\x7fELF")
        archive.writestr("pkg-1.0.dist-info/RECORD", "")
    return path.read_bytes()


def test_the_central_directory_is_read_with_a_few_ranges_not_the_file(server: str, tmp_path: Path) -> None:
    data = big_wheel(tmp_path / "pkg-1.0-py3-none-any.whl")
    SERVED["/pkg-1.0-py3-none-any.whl"] = data
    before = rangefile.TRAFFIC.bytes
    with RangeFile(server + "/pkg-1.0-py3-none-any.whl") as remote:
        assert remote.size == len(data)
        names = zipfile.ZipFile(remote).namelist()  # type: ignore[arg-type]
    assert names == zipfile.ZipFile(tmp_path / "pkg-1.0-py3-none-any.whl").namelist()
    moved = rangefile.TRAFFIC.bytes - before
    assert moved < 400_000 < len(data), moved  # the central directory (~200 KB), not 8 MB


def test_a_server_without_ranges_is_refused_before_the_body_is_read(server: str, tmp_path: Path) -> None:
    SERVED["/norange.whl"] = big_wheel(tmp_path / "n.whl", members=1)
    RANGES["on"] = False
    before = rangefile.TRAFFIC.bytes
    try:
        with pytest.raises(NoRanges, match="answered 200 to a range request"):
            RangeFile(server + "/norange.whl")
    finally:
        RANGES["on"] = True
    assert rangefile.TRAFFIC.bytes == before


def test_listings_are_cached_by_sha256_and_a_relock_reads_nothing(server: str, tmp_path: Path) -> None:
    data = big_wheel(tmp_path / "w.whl", members=50, payload=1000)
    SERVED["/pkg-2.0-py3-none-any.whl"] = data
    wheel = Wheel("pkg", "2.0", "pkg-2.0-py3-none-any.whl", "ab" * 32,
                  url=server + "/pkg-2.0-py3-none-any.whl")
    root = tmp_path / "cache"
    first = listing_of(wheel, root)
    assert first is not None and first.size == len(data) and "pkg/lib/libthing.so.1" in first.names
    entry = json.loads((members_dir(root) / f"{'ab' * 32}.json").read_text())
    assert entry["size"] == len(data) and len(entry["names"]) == 53
    assert [p.name for p in members_dir(root).iterdir()] == [f"{'ab' * 32}.json"]  # no temp file left
    del SERVED["/pkg-2.0-py3-none-any.whl"]  # the index is gone: the cache must answer
    before = rangefile.TRAFFIC.requests
    assert listing_of(wheel, root) == first
    assert rangefile.TRAFFIC.requests == before
    assert not (root / "wheels").exists()


def test_a_wheel_in_the_wheel_cache_or_on_a_file_url_is_read_from_disk(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    local = tmp_path / "index" / "pkg-3.0-py3-none-any.whl"
    local.parent.mkdir()
    big_wheel(local, members=2, payload=10)
    by_url = Wheel("pkg", "3.0", local.name, "cd" * 32, url=local.as_uri())
    found = listing_of(by_url, root)
    assert found is not None and found.size == local.stat().st_size and len(found.names) == 5
    cached = root / "wheels" / ("ef" * 32) / local.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(local.read_bytes())
    assert listing_of(Wheel("pkg", "3.0", local.name, "ef" * 32), root) == found  # no URL needed


def test_a_damaged_cache_entry_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    members_dir(root).mkdir(parents=True)
    (members_dir(root) / f"{'01' * 32}.json").write_text('{"version": 1, "size": ')
    assert cached_listing("01" * 32, root) is None
    assert listing_of(Wheel("pkg", "1.0", "pkg-1.0-py3-none-any.whl", "01" * 32), root) is None
