"""The one place where dream speaks the distribution API: oras-py, plus the fixes it needs.

oras-py (``oras.provider.Registry``) gives us the session, the auth backends (basic, and the
bearer-token dance with the realm) and its URL conventions. What it gets wrong for us is fixed
here, and only here (facts in shared research, deps.md §2):

- ``do_request`` retries *any* exception five times over about two minutes, 401 and typos
  included: replaced by retries with backoff for 5xx answers and broken connections only;
  a refused connection, a bad certificate, 401, 403 and 404 fail at once.
- its token backend re-sends a cached ``pull`` token when a push needs ``pull,push``
  (oras-py#187): on a 401 the token is dropped and one fresh token is asked for the scope the
  registry names. A request body is a *factory*, so a retried request re-sends its bytes from
  the start instead of an exhausted stream.
- uploads read the whole blob into memory: blobs are streamed from their file in 1 MiB reads.
- ``upload_manifest`` re-serialises the manifest (its digest changes): manifests go up as the
  exact bytes whose digest we computed.
- a manifest PUT answered MANIFEST_BLOB_UNKNOWN right after its blobs were confirmed is
  retried: another client is committing one of those blobs at that moment (concurrent CI jobs).
- no cross-repository mount: ``POST …/uploads/?mount=&from=`` is asked first when the blob is
  known to be elsewhere on the same registry; a 202 answer is used as the upload session.
- downloads are not verified: every fetched byte is hashed and checked against its digest.
- the auth scheme is not detected: the ``Www-Authenticate`` of ``GET /v2/`` chooses basic or token.
- it logs through a logger of its own to stderr: silenced; dream reports one line itself.
"""

from __future__ import annotations

import hashlib
import http.client
import json as jsonlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urljoin

import oras.auth
import oras.logger
import oras.provider
import requests
import requests.adapters

from dream.errors import DreamError
from dream.oci.mediatypes import INDEX_TYPES, MANIFEST_TYPES
from dream.oci.reference import Reference, is_loopback
from dream.registry.credentials import Credentials, credentials_for
from dream.registry.settings import HostSettings, settings_for

oras.logger.logger.log_handler = []  # oras prints its own error lines; ours say it in one

TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
RETRY_DELAYS = (0.5, 1.0, 2.0)
TIMEOUT = (10, 300)  # connect, read (seconds)
CHUNK = 1 << 20
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

Body = Callable[[], Any] | None  # a factory: each attempt gets fresh bytes or a fresh stream


class RegistryError(DreamError):
    """A registry said no, or could not be reached; the message is the one line users see.
    ``status`` is the HTTP status (0 without one); ``transient`` says a new try may work."""

    def __init__(self, message: str, status: int = 0, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class _Body:
    """A blob file as a request body: read in 1 MiB pieces (constant memory), with a length
    (so the request has a Content-Length, not chunked framing) and a progress callback."""

    def __init__(self, path: Path, advance: Callable[[int], None]) -> None:
        self.file = open(path, "rb")
        self.length = path.stat().st_size
        self.advance = advance

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        """Up to 1 MiB whatever ``size`` asks: urllib3 asks for 16 KiB and sends what it gets,
        and 64 times fewer calls is what lets one Python thread keep up with loopback."""
        data = self.file.read(CHUNK)
        self.advance(len(data))
        return data


def _transient(exc: requests.RequestException) -> bool:
    """A connection that broke mid-way (reset, aborted, cut short) is worth another try;
    one that never opened (refused, no such host, TLS refused) is not."""
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ReadTimeout)):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                             http.client.RemoteDisconnected, http.client.IncompleteRead)):
            return True
        nested = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        seen = nested[0] if nested else (seen.__cause__ or seen.__context__)
    return False


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason of a connection failure ("Connection refused")."""
    seen: BaseException | None = exc
    reason = str(exc)
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            reason = seen.strerror
        nested = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        seen = nested[0] if nested else (seen.__cause__ or seen.__context__)
    return reason


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Gives every request of the session a timeout, including the token requests that oras
    makes itself without one (a hung token service must not hang a build)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["timeout"] = kwargs.get("timeout") or TIMEOUT
        return super().send(request, **kwargs)


class _OrasRegistry(oras.provider.Registry):
    """oras's Registry with a ``do_request`` that retries only what is transient and
    re-authenticates once on 401 with a fresh token (see the module docstring)."""

    def do_request(self, url: str, method: str = "GET", data: Any = None,
                   headers: dict[str, str] | None = None, json: Any = None,
                   stream: bool = False) -> requests.Response:
        body: Body = data if callable(data) else (lambda: data)
        for attempt in range(len(RETRY_DELAYS) + 1):
            last = attempt == len(RETRY_DELAYS)
            try:
                response = self._authorized(url, method, body, dict(headers or {}), json, stream)
            except requests.RequestException as exc:
                if last or not _transient(exc):
                    raise
            else:
                if last or response.status_code not in TRANSIENT_STATUS:
                    return response
                response.close()
            time.sleep(RETRY_DELAYS[attempt])
        raise AssertionError("unreachable")

    def _authorized(self, url: str, method: str, body: Body, headers: dict[str, str],
                    json: Any, stream: bool) -> requests.Response:
        response = self._send(url, method, body, {**headers, **self._auth_header()}, json, stream)
        if response.status_code != 401 or "Www-Authenticate" not in response.headers:
            return response
        if isinstance(self.auth, oras.auth.BasicAuth):
            return response  # the credentials were sent and refused: asking again won't help
        response.close()
        try:
            headers, changed = self.auth.authenticate_request(response, headers, refresh=True)
        except (ValueError, AttributeError, TypeError, KeyError):  # a realm-less or odd token answer
            raise RegistryError(f"{self.hostname}: the registry's token service gave an answer "
                                "that is not a token") from None
        if not changed:
            return response
        return self._send(url, method, body, headers, json, stream)

    def _auth_header(self) -> dict[str, str]:
        if isinstance(self.auth, oras.auth.BasicAuth):
            return self.auth.get_auth_header() if getattr(self.auth, "_basic_auth", None) else {}
        token = getattr(self.auth, "token", None)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _send(self, url: str, method: str, body: Body, headers: dict[str, str], json: Any,
              stream: bool) -> requests.Response:
        return self.session.request(method, url, data=body() if body else None, json=json,
                                    headers=headers, stream=stream, verify=self._tls_verify,
                                    timeout=TIMEOUT, allow_redirects=True)


class RegistryClient:
    """One registry host: transport chosen and credentials checked on first use."""

    def __init__(self, host: str, settings: HostSettings | None = None) -> None:
        self.host = host
        self.settings = settings or HostSettings()
        if self.settings.ca_file and not Path(self.settings.ca_file).is_file():
            raise RegistryError(f"{host}: the CA file {self.settings.ca_file} does not exist")
        self.credentials: Credentials | None = credentials_for(host)
        self.registry = self._connect()

    # -- connecting -------------------------------------------------------------------------
    def _connect(self) -> _OrasRegistry:
        """Pick http or https, then read ``GET /v2/``'s challenge to pick basic or token auth,
        and authenticate once, so wrong credentials fail here, before any byte moves."""
        verify: bool | str = self.settings.ca_file or True
        plain, probe = self._probe(verify)
        challenge = probe.headers.get("Www-Authenticate", "")
        backend = "basic" if probe.status_code == 401 and challenge.lower().startswith("basic") else "token"
        registry = _OrasRegistry(hostname=self.host, insecure=plain, tls_verify=verify, auth_backend=backend)
        for prefix in ("http://", "https://"):
            registry.session.mount(prefix, _TimeoutAdapter())
        if self.credentials:
            registry.auth.set_basic_auth(self.credentials.username, self.credentials.secret)
        elif backend == "basic":
            raise self._unauthorized()
        self.base = f"{'http' if plain else 'https'}://{self.host}"
        if probe.status_code == 401:
            answer = self._call(registry, "GET", "/v2/")
            if answer.status_code == 401:
                raise self._unauthorized()
        return registry

    def _probe(self, verify: bool | str) -> tuple[bool, requests.Response]:
        """Whether to speak plain http, and the answer to ``GET /v2/``. A loopback registry
        may be plain http (docker allows 127.0.0.0/8 so too): there, a TLS handshake answered
        in plain HTTP means http; any other TLS problem is reported."""
        plain = self.settings.plain_http
        try:
            if plain is None and is_loopback(self.host) and not self.settings.ca_file:
                try:
                    return False, self._get_v2("https", verify)
                except requests.exceptions.SSLError as exc:
                    if "wrong version number" not in str(exc).lower():
                        raise
                    plain = True
            return bool(plain), self._get_v2("http" if plain else "https", verify)
        except requests.exceptions.SSLError:
            raise self._tls_error() from None
        except requests.ConnectionError as exc:
            raise RegistryError(f"{self.host}: registry unreachable ({_reason(exc)})") from None

    def _get_v2(self, scheme: str, verify: bool | str) -> requests.Response:
        """``GET /v2/``, retried like every other request: a 5xx or a broken connection on the
        first request of a push would otherwise fail it."""
        for delay in (*RETRY_DELAYS, None):
            try:
                response = requests.get(f"{scheme}://{self.host}/v2/", verify=verify, timeout=TIMEOUT)
            except requests.RequestException as exc:
                if delay is None or not _transient(exc):
                    raise
            else:
                response.close()
                if delay is None or response.status_code not in TRANSIENT_STATUS:
                    break
            time.sleep(delay)
        if response.status_code not in (200, 401):
            raise RegistryError(f"{self.host}: GET /v2/ answered {response.status_code}; "
                                "is this an OCI registry?")
        return response

    def _tls_error(self) -> RegistryError:
        return RegistryError(f"{self.host}: the registry's TLS certificate is not trusted; name its CA "
                             f"in registries.{self.host}.ca_file or DREAM_REGISTRY_CA")

    def _unauthorized(self) -> RegistryError:
        if self.credentials is None:
            return RegistryError(f"{self.host}: the registry needs credentials and none were found "
                                 "(DREAM_REGISTRY_USERNAME/PASSWORD or the Docker config)")
        return RegistryError(f"{self.host}: authentication failed for user "
                             f"{self.credentials.username!r} (credentials from {self.credentials.origin})")

    # -- requests ---------------------------------------------------------------------------
    def _call(self, registry: _OrasRegistry, method: str, path: str, body: Body = None,
              headers: dict[str, str] | None = None, stream: bool = False) -> requests.Response:
        url = path if "://" in path else f"{self.base}{path}"
        try:
            return registry.do_request(url, method, data=body, headers=headers, stream=stream)
        except requests.exceptions.SSLError:
            raise self._tls_error() from None
        except requests.RequestException as exc:
            raise RegistryError(f"{self.host}: {method} {path.split('?')[0]} failed ({_reason(exc)})",
                                transient=_transient(exc)) from None

    def request(self, method: str, path: str, body: Body = None, headers: dict[str, str] | None = None,
                stream: bool = False, ok: tuple[int, ...] = (200,), what: str = "") -> requests.Response:
        """One request; an answer outside ``ok`` becomes a one-line RegistryError."""
        response = self._call(self.registry, method, path, body, headers, stream)
        if response.status_code not in ok:
            raise self._failure(response, method, what or path.split("?")[0])
        return response

    def _failure(self, response: requests.Response, method: str, what: str) -> RegistryError:
        status = response.status_code
        detail = _error_detail(response)
        response.close()
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        if status == 403 or (status == 401 and "insufficient_scope" in response.headers.get("Www-Authenticate", "")):
            return RegistryError(f"{self.host}: {what}: access denied for {who}", status)
        if status == 401:
            return self._unauthorized()
        if "NAME_UNKNOWN" in detail:
            return RegistryError(f"{self.host}: {what}: repository does not exist", status)
        if status == 404:
            return RegistryError(f"{self.host}: {what}: not found", status)
        return RegistryError(f"{self.host}: {method} {what} failed with {status}"
                             + (f" ({detail})" if detail else ""), status, status in TRANSIENT_STATUS)

    # -- the distribution API ---------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404),
                                what=f"{repository}@{digest[:19]}")
        response.close()
        return response.status_code == 200

    def start_upload(self, repository: str, digest: str, mount_from: str | None = None) -> str | None:
        """Open an upload session; with ``mount_from`` ask the registry to mount the blob from
        that repository first. Returns the upload URL, or None when the blob was mounted."""
        query = f"?mount={digest}&from={mount_from}" if mount_from else ""
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/{query}", ok=(201, 202),
                                what=f"{repository} upload")
        response.close()
        if response.status_code == 201:
            return None
        if "Location" not in response.headers:
            raise RegistryError(f"{self.host}: {repository}: the registry opened an upload without a Location")
        return urljoin(self.base + "/", response.headers["Location"])

    def upload(self, location: str, digest: str, path: Path, advance: Callable[[int], None]) -> None:
        """Stream ``path`` into an open session and close it with its digest (monolithic PUT)."""
        separator = "&" if "?" in location else "?"
        opened: list[_Body] = []

        def body() -> _Body:  # a fresh reader per attempt: a retry re-sends from the start
            opened.append(_Body(path, advance))
            return opened[-1]
        try:
            response = self.request("PUT", f"{location}{separator}digest={digest}", body=body, ok=(201,),
                                    headers={"Content-Type": "application/octet-stream"},
                                    what=f"upload of {digest[:19]}")
        finally:
            for reader in opened:
                reader.file.close()
        got = response.headers.get("Docker-Content-Digest", digest)
        response.close()
        if got != digest:
            raise RegistryError(f"{self.host}: the registry stored {digest[:19]} as {got[:19]}")

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> None:
        """PUT the exact manifest bytes; the registry must answer with their digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        for delay in (*RETRY_DELAYS, None):
            try:
                response = self.request("PUT", f"/v2/{repository}/manifests/{reference}", body=lambda: data,
                                        headers={"Content-Type": media_type}, ok=(201,),
                                        what=f"{repository}:{reference}")
                break
            except RegistryError as exc:
                # Callers PUT a manifest only after every blob it names was confirmed. If the
                # registry still calls one unknown, another client is committing the same blob
                # this moment (distribution 2.8's filesystem driver, seen with concurrent CI
                # jobs): the only 4xx worth waiting out.
                if delay is None or "MANIFEST_BLOB_UNKNOWN" not in str(exc):
                    raise
                time.sleep(delay)
        got = response.headers.get("Docker-Content-Digest", digest)
        response.close()
        if got != digest:
            raise RegistryError(f"{self.host}: {repository}:{reference} was stored as {got}, not {digest}")

    def get_manifest(self, reference: Reference) -> tuple[bytes, str, str]:
        """The manifest's bytes, media type and digest; checked against the digest if pinned."""
        response = self.request("GET", f"/v2/{reference.repository}/manifests/{reference.selector}",
                                headers={"Accept": MANIFEST_ACCEPT},
                                what=str(reference).removeprefix(reference.host + "/"))
        data = response.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.digest and digest != reference.digest:
            raise RegistryError(f"{reference}: the registry sent a manifest whose digest is {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = _json(data).get("mediaType") or media_type
        except ValueError:
            raise RegistryError(f"{reference}: the manifest is not JSON") from None
        return data, media_type, digest

    def manifest_exists(self, repository: str, reference: str) -> bytes | None:
        """The manifest's bytes, or None when the registry has no such tag (404)."""
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}", ok=(200, 404),
                                headers={"Accept": MANIFEST_ACCEPT}, what=f"{repository}:{reference}")
        return response.content if response.status_code == 200 else None

    def fetch_blob(self, repository: str, digest: str, size: int) -> Iterator[bytes]:
        """Stream a blob's bytes, verifying size and digest at the end (raises before the
        last piece is handed out if either is wrong, so a caller never commits bad bytes)."""
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", stream=True,
                                what=f"{repository}@{digest[:19]}")
        hasher, seen = hashlib.sha256(), 0
        label = f"{self.host}: blob {digest[:19]}"
        try:
            for piece in response.iter_content(CHUNK):
                seen += len(piece)
                if seen > size:
                    raise RegistryError(f"{label} is longer than its {size} bytes")
                hasher.update(piece)
                if seen == size and "sha256:" + hasher.hexdigest() != digest:
                    raise RegistryError(f"{label} does not match its digest")
                yield piece
        except requests.RequestException as exc:
            raise RegistryError(f"{label}: the download broke off ({_reason(exc)})", transient=True) from None
        finally:
            response.close()
        if seen != size:
            raise RegistryError(f"{label} ended after {seen} of {size} bytes", transient=True)
        if "sha256:" + hasher.hexdigest() != digest:  # only reached for an empty blob
            raise RegistryError(f"{label} does not match its digest")


def _error_detail(response: requests.Response) -> str:
    """The registry's ``errors`` list as ``CODE: message; …`` (empty if the body is not one)."""
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError):
        return ""


def _json(data: bytes) -> dict[str, Any]:
    value = jsonlib.loads(data)
    return value if isinstance(value, dict) else {}


_CLIENTS: dict[str, RegistryClient] = {}
def client_for(host: str) -> RegistryClient:
    """One client per host and process (connections, the transport probe and tokens are reused)."""
    if host not in _CLIENTS:
        _CLIENTS[host] = RegistryClient(host, settings_for(host))
    return _CLIENTS[host]
