"""A read-only, seekable file over HTTP range requests, for `zipfile` to read a remote wheel's
central directory without the rest of the file.

The first request asks for the file's last `TAIL` bytes (a suffix range), which also gives the
file's size (``Content-Range``); for most wheels the end-of-central-directory record and the
whole central directory are in it, so one request suffices. Anything else zipfile asks for is
fetched on demand, gaps only. Every body byte received is counted in `TRAFFIC`, so the cost of
a lock can be measured and tested.
"""

from __future__ import annotations

import bisect
import io
import re
from dataclasses import dataclass
from types import TracebackType

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

from dream.errors import DreamError
from dream.python.index import http_session, http_timeout

TAIL = 32 * 1024  # the EOCD record (22 B) and, for most wheels, the whole central directory


@dataclass
class Traffic:
    """Bytes and requests sent over HTTP by range readers in this process."""

    bytes: int = 0
    requests: int = 0


TRAFFIC = Traffic()


class NoRanges(Exception):
    """The server answers no byte ranges (or refuses access): the caller falls back to a download."""


class RangeFile(io.RawIOBase):
    """``url``'s bytes, fetched by range as read. Pass one ``session`` to many files to reuse
    its connections (a lock reads dozens of wheels from the same host)."""

    def __init__(self, url: str, session: requests.Session | None = None) -> None:
        super().__init__()
        self.url = url
        self.own_session = session is None
        self.session = session or http_session()
        self.position = 0
        self.starts: list[int] = []  # sorted start offsets of the fetched chunks
        self.chunks: dict[int, bytes] = {}
        try:
            self.size = self._tail()
        except BaseException:
            if self.own_session:
                self.session.close()
            raise

    def _get(self, header: str) -> requests.Response:
        import requests  # here: a no-op build never reads a remote wheel
        try:
            response = self.session.get(self.url, headers={"Range": header, "Accept-Encoding": "identity"},
                                        stream=True, timeout=http_timeout())
        except requests.RequestException as exc:
            raise DreamError(f"cannot read {_shown(self.url)}: {exc.__class__.__name__}") from None
        if response.status_code != 206:
            response.close()  # a 200 would be the whole file: never read it
            raise NoRanges(f"{_shown(self.url)} answered {response.status_code} to a range request")
        TRAFFIC.requests += 1
        return response

    def _tail(self) -> int:
        response = self._get(f"bytes=-{TAIL}")
        with response:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers.get("Content-Range", ""))
            if not match:
                raise NoRanges(f"{_shown(self.url)} sent no usable Content-Range")
            data = response.content
        TRAFFIC.bytes += len(data)
        self._keep(int(match.group(1)), data)
        return int(match.group(3))

    def _keep(self, start: int, data: bytes) -> None:
        if data:
            bisect.insort(self.starts, start)
            self.chunks[start] = data

    def _fetch(self, start: int, end: int) -> None:
        with self._get(f"bytes={start}-{end - 1}") as response:
            data = response.content
        TRAFFIC.bytes += len(data)
        if len(data) != end - start:
            raise DreamError(f"{_shown(self.url)} sent {len(data)} bytes for a range of {end - start}")
        self._keep(start, data)

    def _range(self, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (exclusive), fetching only what no chunk holds."""
        out = bytearray()
        position = start
        while position < end:
            index = bisect.bisect_right(self.starts, position) - 1
            if index >= 0:
                begin = self.starts[index]
                chunk = self.chunks[begin]
                if position < begin + len(chunk):
                    take = chunk[position - begin:min(end, begin + len(chunk)) - begin]
                    out += take
                    position += len(take)
                    continue
            following = self.starts[index + 1] if index + 1 < len(self.starts) else end
            self._fetch(position, min(end, following))
        return bytes(out)

    # the file interface zipfile uses
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        data = self._range(self.position, end) if end > self.position else b""
        self.position += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def __enter__(self) -> RangeFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.own_session:
            self.session.close()
        self.close()


def _shown(url: str) -> str:
    """The URL less any credentials and query (a token must never reach an error message)."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
