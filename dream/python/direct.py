"""Locked wheels fetched over HTTP straight from the indexes pip is configured with.

`pip download` spends about 7 ms of CPU per MB it fetches (small reads through its download
machinery): the 581 MB cuBLAS wheel took 5.5 s of a core, the longest step of a cold build on
two cores. Here a wheel's URL is read off its project's page on each index in pip's order
(PEP 691 JSON, or the PEP 503 HTML every index serves), after a look into the find-links
folders, and the file is read in 1 MiB pieces and hashed as it lands. Which indexes, which
find-links, which CA bundle and proxy: pip's own settings (`dream.python.index`); pip's default
index is pip's own constant, never written here. A wheel this cannot find or fetch is left to
pip (`dream.python.wheels`), so this only ever makes a download faster, never different: every
file is checked against the lock's sha256 either way.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from dream.python.index import http_session, http_timeout, pip_settings
from dream.python.resolve import Wheel, normalize

if TYPE_CHECKING:
    import requests

PIECE = 1 << 20
_ANCHOR = re.compile(r"""<a\s[^>]*?href\s*=\s*["']([^"']+)["'][^>]*>([^<]*)</a>""", re.IGNORECASE)
_JSON = "application/vnd.pypi.simple.v1+json"


def fetch_direct(wheels: list[Wheel], directory: Path) -> list[Wheel]:
    """Download what it can of ``wheels`` into ``directory`` (as ``<sha256>/<filename>``,
    verified); return the wheels left for pip."""
    left = []
    with http_session() as session:
        pages: dict[str, dict[str, str]] = {}
        for wheel in wheels:
            try:
                url = _locate(wheel, session, pages)
                if url is None or not _download(url, wheel, directory / wheel.sha256, session):
                    left.append(wheel)
            except (OSError, ValueError, KeyError, TypeError):  # requests' errors are OSErrors
                left.append(wheel)  # pip tries it, and says what is wrong if it fails too
    return left


def _indexes() -> list[str]:
    """pip's index and extra indexes, in its order; none with ``no-index``."""
    settings = pip_settings()
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        return []
    first = settings.get("index-url") or _pip_default_index()
    return [url for url in (first, *settings.get("extra-index-url", "").split()) if url]


def _pip_default_index() -> str:
    """pip's own default index, as pip itself names it (`PIP_INDEX_URL` unset)."""
    try:
        from pip._internal.models.index import PyPI  # pip's constant: dream names no index
        return str(PyPI.simple_url)
    except (ImportError, AttributeError):
        return ""


def _locate(wheel: Wheel, session: requests.Session, pages: dict[str, dict[str, str]]) -> str | None:
    """The URL of ``wheel``'s file: a find-links folder's copy first, then each index."""
    for link in pip_settings().get("find-links", "").split():
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(link).path)) \
            if link.startswith("file:") else Path(link)
        if (folder / wheel.filename).is_file():
            return (folder / wheel.filename).resolve().as_uri()
    for index in _indexes():
        page = f"{index.rstrip('/')}/{normalize(wheel.name)}/"
        if page not in pages:
            pages[page] = dict(_files_on(page, session))
        if wheel.filename in pages[page]:
            return pages[page][wheel.filename]
    return None


def _files_on(page: str, session: requests.Session) -> Iterator[tuple[str, str]]:
    """(file name, absolute URL) of every file a project page lists; nothing if it has none."""
    if page.startswith("file:"):
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(page).path))
        index = folder / "index.html"
        if not index.is_file():
            return
        body, kind = index.read_text(errors="replace"), "text/html"
        base = index.as_uri()
    else:
        response = session.get(page, headers={"Accept": f"{_JSON}, text/html;q=0.1"}, timeout=http_timeout())
        if response.status_code != 200:
            return
        body, kind, base = response.text, response.headers.get("Content-Type", ""), response.url
    if kind.startswith(_JSON):
        for entry in json.loads(body).get("files", []):
            yield entry["filename"], urllib.parse.urljoin(base, entry["url"])
        return
    for href, text in _ANCHOR.findall(body):
        url = urllib.parse.urljoin(base, html.unescape(href)).split("#", 1)[0]
        yield html.unescape(text).strip() or urllib.parse.unquote(url.rsplit("/", 1)[-1]), url


def _download(url: str, wheel: Wheel, folder: Path, session: requests.Session) -> bool:
    """Fetch ``url`` to ``folder/<filename>``; False (and nothing left) unless its sha256 is
    the lock's."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / wheel.filename
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        if url.startswith("file:"):
            with open(urllib.request.url2pathname(urllib.parse.urlparse(url).path), "rb") as source:
                while piece := source.read(PIECE):
                    digest.update(piece)
                    out.write(piece)
        else:
            with session.get(url, stream=True, timeout=http_timeout(),
                             headers={"Accept-Encoding": "identity"}) as response:
                response.raise_for_status()
                for part in _body(response):
                    digest.update(part)
                    out.write(part)
    if digest.hexdigest() != wheel.sha256:
        shutil.rmtree(folder, ignore_errors=True)
        return False
    return True


def _body(response: requests.Response) -> Iterator[bytes | memoryview]:
    """The body in pieces, each valid until the next is asked for.

    Read straight into one reused buffer from the connection under urllib3 (http.client's
    response, its ``_fp``): urllib3's own reads allocate a fresh 1 MiB piece each time and
    copy it twice on the way out, which cost the 594 MB cuBLAS wheel 1.4–2.6 s of system time
    against 1.1 s, on the two cores the layers are built on. http.client still ends the body
    where Content-Length or the chunked encoding says; a body cut short ends early and fails
    the sha256 check, which leaves the wheel to pip as any other failure does. Where that
    connection is not there (another urllib3) or the body is encoded, requests' own pieces."""
    raw: Any = getattr(getattr(response, "raw", None), "_fp", None)
    if not hasattr(raw, "readinto") or response.headers.get("Content-Encoding", "identity") != "identity":
        yield from response.iter_content(PIECE)
        return
    buffer = memoryview(bytearray(PIECE))
    while size := raw.readinto(buffer):
        yield buffer[:size]
