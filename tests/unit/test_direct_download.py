"""Wheels fetched straight from pip's indexes (dream.python.direct): found on PEP 503 and PEP 691
pages and in find-links folders, verified, and left to pip whenever anything is off."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from dream.python import direct
from dream.python.resolve import Wheel


def wheel_file(folder: Path, name: str = "demo_pkg-1.0-py3-none-any.whl", data: bytes = b"wheel bytes") -> tuple[Path, Wheel]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path, Wheel("demo-pkg", "1.0", name, hashlib.sha256(data).hexdigest(), len(data))


def settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    monkeypatch.setattr(direct, "pip_settings", lambda: {k.replace("_", "-"): v for k, v in values.items()})


def test_a_file_index_page_in_html_gives_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PEP 503 page (as /opt/pypi/simple here) with a relative link and a hash fragment."""
    _, wheel = wheel_file(tmp_path / "files")
    page = tmp_path / "simple" / "demo-pkg"
    page.mkdir(parents=True)
    (page / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.filename}#sha256={wheel.sha256}">{wheel.filename}</a></body></html>')
    settings(monkeypatch, index_url=(tmp_path / "simple").as_uri())
    assert direct.fetch_direct([wheel], tmp_path / "out") == []
    assert (tmp_path / "out" / wheel.sha256 / wheel.filename).read_bytes() == b"wheel bytes"


def test_a_find_links_folder_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, wheel = wheel_file(tmp_path / "links")
    settings(monkeypatch, index_url=(tmp_path / "nowhere").as_uri(), find_links=str(tmp_path / "links"))
    assert direct.fetch_direct([wheel], tmp_path / "out") == []


def test_a_wrong_hash_or_an_unknown_wheel_is_left_to_pip_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, wheel = wheel_file(tmp_path / "links")
    liar = Wheel(wheel.name, wheel.version, wheel.filename, "0" * 64, wheel.size)
    _, absent = wheel_file(tmp_path / "elsewhere", "other-2.0-py3-none-any.whl")
    settings(monkeypatch, no_index="true", find_links=str(tmp_path / "links"))
    assert direct.fetch_direct([liar, absent], tmp_path / "out") == [liar, absent]
    assert not any(path.is_file() for path in (tmp_path / "out").rglob("*"))


class Response:
    def __init__(self, status: int, body: bytes, kind: str, url: str) -> None:
        self.status_code, self.content, self.url = status, body, url
        self.text, self.headers = body.decode(), {"Content-Type": kind}

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def raise_for_status(self) -> None:
        if self.status_code != 200:
            raise OSError(f"HTTP {self.status_code}")

    def iter_content(self, size: int) -> list[bytes]:
        return [self.content[i:i + size] for i in range(0, len(self.content), size)]


class Session:
    """An index that answers PEP 691 JSON for project pages and serves one file."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.asked = files, list[str]()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def get(self, url: str, **options: Any) -> Response:
        self.asked.append(url)
        if url.endswith("/demo-pkg/"):
            listing = {"files": [{"filename": name, "url": f"../../files/{name}"} for name in self.files]}
            return Response(200, json.dumps(listing).encode(), "application/vnd.pypi.simple.v1+json", url)
        name = url.rsplit("/", 1)[-1]
        return Response(200, self.files[name], "application/octet-stream", url) if name in self.files \
            else Response(404, b"", "text/plain", url)


def test_a_json_index_page_gives_the_wheel_and_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"x" * (3 * direct.PIECE + 5)
    _, first = wheel_file(tmp_path / "ref", data=data)
    _, second = wheel_file(tmp_path / "ref", "demo_pkg-1.0-py2-none-any.whl", data=b"second")
    session = Session({first.filename: data, second.filename: b"second"})
    monkeypatch.setattr(direct, "http_session", lambda: session)
    settings(monkeypatch, index_url="https://index.invalid/simple")
    assert direct.fetch_direct([first, second], tmp_path / "out") == []
    assert (tmp_path / "out" / first.sha256 / first.filename).read_bytes() == data
    assert session.asked.count("https://index.invalid/simple/demo-pkg/") == 1


def test_pips_own_default_index_is_used_when_none_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    settings(monkeypatch)
    (found,) = direct._indexes()
    assert found.startswith("https://") and found.endswith("/simple")
    assert direct._indexes() == [found]
    settings(monkeypatch, extra_index_url="file:///a file:///b")
    assert direct._indexes() == [found, "file:///a", "file:///b"]


class _Served:
    """A loopback HTTP server for one body: whole (Content-Length), chunked, or cut short."""

    def __init__(self, body: bytes, mode: str) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                if mode == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(body), 300_000):
                        piece = body[start:start + 300_000]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "whole" else body[:len(body) // 2])
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/demo_pkg-1.0-py3-none-any.whl"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> "_Served":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["whole", "chunked"])
def test_a_real_http_body_is_read_into_one_buffer_and_verified(tmp_path: Path, mode: str) -> None:
    import requests

    data = bytes(range(256)) * (5 * direct.PIECE // 256 + 7)
    _, wheel = wheel_file(tmp_path / "ref", data=data)
    with _Served(data, mode) as served, requests.Session() as session:
        with session.get(served.url, stream=True) as response:
            pieces = [bytes(piece) for piece in direct._body(response)]
            assert all(type(piece) is bytes for piece in pieces)
        assert b"".join(pieces) == data and max(map(len, pieces)) <= direct.PIECE
        with session.get(served.url, stream=True) as response:
            assert all(isinstance(piece, memoryview) for piece in direct._body(response))  # no copies
        assert direct._download(served.url, wheel, tmp_path / "out", session)
    assert (tmp_path / "out" / wheel.filename).read_bytes() == data


def test_a_body_cut_short_is_left_to_pip_and_leaves_nothing(tmp_path: Path) -> None:
    import requests

    data = b"w" * (3 * direct.PIECE)
    _, wheel = wheel_file(tmp_path / "ref", data=data)
    with _Served(data, "short") as served, requests.Session() as session:
        assert direct._download(served.url, wheel, tmp_path / "out", session) is False
    assert not (tmp_path / "out").exists()
