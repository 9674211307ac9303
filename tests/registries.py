"""Real registries for the push/pull integration tests: Debian's ``docker-registry``
(distribution 2.8) on free loopback ports, in the three setups our client must handle.

- ``anonymous``: plain http, no auth (a local registry, ``docker run registry`` style).
- ``basic-tls``: htpasswd basic auth over https, with a throw-away CA made by ``openssl``
  (like a self-hosted registry behind its own CA; the client must be given ``ca_file``).
- ``token``: distribution's bearer-token auth (Docker Hub, GHCR, Harbor style), with a small
  token server in this module (a thread) that issues RS256 JWTs for exactly the scopes asked.

What the registry served is read back from its log, so tests can assert which requests a push or
pull made (``mark()`` then ``requests(since)``/``blob_uploads(since)``). The source is the access
log (Apache combined format on the registry's stdout), not the JSON ``"response completed"``
lines (stderr): distribution writes no such line for a 401 auth challenge, a 405 or an unknown
route, and those are exactly what a client test must see. Both go to the one ``log_path``.

Every server started here is stopped here: ``stop()`` at fixture teardown, and the registry gets
SIGTERM if the test process dies first (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import bcrypt
import pytest
import requests as http
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.conftest import require

__all__ = ["MODES", "RegistryStartError", "Request", "RunningRegistry", "TokenServer", "any_registry",
           "registry_anonymous", "registry_basic_tls", "registry_token", "start_registry"]

MODES = ("anonymous", "basic-tls", "token")
USERNAME = "dream"
PASSWORD = "dream-test-secret"
SERVICE = "dream-test-registry"      # the token's audience: the registry checks it
ISSUER = "dream-test-token-server"   # the token's iss: the registry checks it too
READY_TIMEOUT = 20.0
PORT_TRIES = 3
PROBE_AGENT = "dream-test-readiness-probe"   # filtered out of requests(): not the test's doing

# 127.0.0.1 - - [21/Nov/2026:11:13:58 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"$')
_UPLOAD_PATH = re.compile(r"^/v2/.+/blobs/uploads/")


class RegistryStartError(RuntimeError):
    """The registry did not come up; the message carries its log tail."""


class Request(NamedTuple):
    """One request the registry answered. ``path`` is the request URI as sent, query included
    (``?digest=``, ``?mount=&from=`` tell upload steps apart)."""

    method: str
    path: str
    status: int


@dataclass
class RunningRegistry:
    """A started registry and what a test needs to reach it and to check what it served."""

    mode: str
    host: str
    scheme: str
    username: str | None
    password: str | None
    ca_file: Path | None
    log_path: Path
    storage: Path
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    token_server: TokenServer | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def mark(self) -> int:
        """The number of requests served so far: pass it to ``requests(since=)`` to see only
        what came after (the session-scoped registries are shared between tests)."""
        return len(self.requests())

    def requests(self, since: int = 0) -> list[Request]:
        """The requests served, in the order they completed, from position ``since``."""
        _settle(self.log_path)
        return _parse_requests(self.log_path.read_text(errors="replace"))[since:]

    def blob_uploads(self, since: int = 0) -> list[Request]:
        """The requests that carry blob bytes: PATCH or PUT on ``/v2/<repo>/blobs/uploads/...``
        (a monolithic upload is one PUT; a chunked one its PATCHes and the closing PUT). The POST
        that opens an upload or mounts a blob carries none, so a mount counts zero here."""
        return [r for r in self.requests(since)
                if r.method in ("PATCH", "PUT") and _UPLOAD_PATH.match(r.path)]

    def docker_config(self, directory: Path) -> Path:
        """Write ``directory/config.json`` with this registry's credentials, as ``docker login``
        would, and return ``directory`` (for ``DOCKER_CONFIG``)."""
        directory.mkdir(parents=True, exist_ok=True)
        auths: dict[str, dict[str, str]] = {}
        if self.username is not None:
            auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            auths[self.host] = {"auth": auth}
        (directory / "config.json").write_text(json.dumps({"auths": auths}, indent=2) + "\n")
        return directory

    def stop(self) -> None:
        """Stop the registry (terminate, then kill) and the token server. Safe to call twice."""
        if self.process is not None:
            _stop_process(self.process)
            self.process = None
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None


# ---------------------------------------------------------------------------- the token server


class TokenServer:
    """Distribution's token auth, the minimum a registry accepts: basic credentials for one user
    are checked, then a JWT signed RS256 grants exactly the scopes asked. Its signing
    certificate is self-signed; it goes in the registry's ``rootcertbundle`` and in the token's
    ``x5c`` header, which is how the registry finds the key.

    ``requests`` records every token request ({"scopes", "user", "granted"}), so tests can see
    which scopes a client asked for (e.g. that a push asked ``pull,push``)."""

    def __init__(self, directory: Path, username: str, password: str, lifetime: int = 300) -> None:
        self.username, self.password, self.lifetime = username, password, lifetime
        self.requests: list[dict[str, Any]] = []
        self._key, self._cert = _signing_key_and_cert()
        self.cert_bundle = directory / "token-signing.pem"
        self.cert_bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._server = _TokenHTTPServer(("127.0.0.1", 0), _TokenHandler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server",
                                        daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/token"

    def accepts(self, user: str | None, password: str | None) -> bool:
        return user == self.username and password is not None and secrets.compare_digest(
            password, self.password)

    def token(self, user: str, scopes: list[str]) -> str:
        """A JWT granting each scope's actions (the claims distribution 2.8 checks: iss, aud,
        exp/nbf with a minute's leeway, access; jti/iat/sub for completeness)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + self.lifetime,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                  "access": [access for scope in scopes if (access := _access(scope))]}
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64url(_json_bytes(header))}.{_b64url(_json_bytes(claims))}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _TokenHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 issuer: TokenServer) -> None:
        super().__init__(address, handler)
        self.issuer = issuer


class _TokenHandler(BaseHTTPRequestHandler):
    """GET with basic auth and ``scope`` parameters (docker, skopeo, oras), or the OAuth2
    password grant by POST (containerd tries that first and only falls back on 400/401/404/405,
    so http.server's default 501 would break it)."""

    server: _TokenHTTPServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            return self._send(404, {"error": "not found"})
        user, password = _basic_credentials(self.headers.get("Authorization"))
        self._answer(user, password, _scopes(parse_qs(url.query).get("scope", [])))

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/token":
            return self._send(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        scopes = _scopes([form.get("scope", "")])
        if form.get("grant_type") != "password":
            self.server.issuer.requests.append({"scopes": scopes, "user": form.get("username"),
                                                "granted": False})
            return self._send(400, {"error": "unsupported_grant_type"})
        self._answer(form.get("username"), form.get("password"), scopes)

    def _answer(self, user: str | None, password: str | None, scopes: list[str]) -> None:
        issuer = self.server.issuer
        granted = issuer.accepts(user, password)
        issuer.requests.append({"scopes": scopes, "user": user, "granted": granted})
        if not granted or user is None:
            return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                              {"WWW-Authenticate": 'Basic realm="dream-test-token-server"'})
        token = issuer.token(user, scopes)
        issued = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self._send(200, {"token": token, "access_token": token, "expires_in": issuer.lifetime,
                         "issued_at": issued})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = _json_bytes(body)
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``requests`` is the record, stderr noise would only clutter pytest output."""


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return user, password


def _scopes(values: list[str]) -> list[str]:
    """Scopes from ``scope`` values: clients send several as repeated parameters or space-joined
    in one (containerd, the OAuth2 form), so both are split the same way."""
    return [scope for value in values for scope in value.split()]


def _access(scope: str) -> dict[str, Any] | None:
    """``repository:t/x:pull,push`` → the token's access entry for it (type, name, actions)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


def _signing_key_and_cert() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dream test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- auth material


def _write_htpasswd(path: Path, username: str, password: str) -> None:
    """bcrypt at cost 4, the least Go accepts: the registry checks it on every request, and at
    the default cost 12 each one would take a quarter of a second."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{username}:{hashed}\n")


def _make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it, with openssl
    (the same tool a person would use for a private registry). Returns (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key",
                                                          "server.csr", "server.pem"))
    ext = directory / "server.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n"
                   "keyUsage = critical, digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n"
                   "authorityKeyIdentifier = keyid\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=dream test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-CAserial", directory / "ca.srl", "-days", "2", "-extfile", ext, "-out", cert)
    return ca, cert, key


def _openssl(*args: str | Path) -> None:
    run = subprocess.run([require("openssl"), *map(str, args)], check=False, capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise RegistryStartError(f"openssl {args[0]} failed:\n{run.stderr}")


# ---------------------------------------------------------------------------- the registry


def start_registry(mode: str, base: Path) -> RunningRegistry:
    """Start ``docker-registry`` in ``mode`` with everything under ``base``; returns once it
    answers ``GET /v2/``. Raises RegistryStartError (with the log tail) if it does not."""
    if mode not in MODES:
        raise ValueError(f"unknown registry mode {mode!r}; one of {', '.join(MODES)}")
    base.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RegistryStartError("docker-registry is not installed (Debian package docker-registry)")
    token_server = TokenServer(base, USERNAME, PASSWORD) if mode == "token" else None
    try:
        auth, tls, ca_file = _auth_setup(mode, base, token_server)
        return _launch_on_free_port(binary, mode, base, auth, tls, ca_file, token_server)
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise


def _auth_setup(mode: str, base: Path, token_server: TokenServer | None,
                ) -> tuple[dict[str, Any] | None, dict[str, str] | None, Path | None]:
    """The config's ``auth`` and ``http.tls`` sections for ``mode``, and the CA to trust."""
    if mode == "basic-tls":
        htpasswd = base / "htpasswd"
        _write_htpasswd(htpasswd, USERNAME, PASSWORD)
        ca, cert, key = _make_tls(base)
        auth = {"htpasswd": {"realm": "dream-test-registry", "path": str(htpasswd)}}
        return auth, {"certificate": str(cert), "key": str(key)}, ca
    if token_server is not None:
        return {"token": {"realm": token_server.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(token_server.cert_bundle)}}, None, None
    return None, None, None


def _launch_on_free_port(binary: str, mode: str, base: Path, auth: dict[str, Any] | None,
                         tls: dict[str, str] | None, ca_file: Path | None,
                         token_server: TokenServer | None) -> RunningRegistry:
    """Pick a free port and start; the port is only free when asked, so another process may
    take it before the registry binds: then try another one."""
    for _ in range(PORT_TRIES):
        port = _free_port()
        config, log_path, storage = base / "config.yml", base / "registry.log", base / "storage"
        config.write_text(yaml.safe_dump(_config(port, storage, auth, tls), sort_keys=False))
        registry = RunningRegistry(
            mode=mode, host=f"127.0.0.1:{port}", scheme="https" if tls else "http",
            username=None if mode == "anonymous" else USERNAME,
            password=None if mode == "anonymous" else PASSWORD,
            ca_file=ca_file, log_path=log_path, storage=storage,
            token_requests=token_server.requests if token_server else [],
            process=_spawn(binary, config, log_path), token_server=None)
        try:
            _wait_ready(registry)
        except _PortTaken:
            registry.stop()
            continue
        except BaseException:
            registry.stop()
            raise
        registry.token_server = token_server
        return registry
    raise RegistryStartError(f"docker-registry found its port taken {PORT_TRIES} times in a row")


def _config(port: int, storage: Path, auth: dict[str, Any] | None,
            tls: dict[str, str] | None) -> dict[str, Any]:
    """The registry config: loopback only, deletes allowed (tests may delete manifests and
    blobs), JSON logs on stderr and the access log (what requests() reads) on stdout."""
    http_section: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}
    if tls:
        http_section["tls"] = tls
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": http_section,
    }
    if auth:
        config["auth"] = auth
    return config


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(binary: str, config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Run the registry with both its streams in ``log_path``. ``REGISTRY_*`` variables are
    dropped: distribution lets them override the config file (an ``REGISTRY_HTTP_ADDR`` in the
    environment would move it off our port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with log_path.open("wb") as log:
        # preexec_fn is unsafe in a threaded parent in general; this one only calls prctl.
        return subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=env,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509


def _load_prctl() -> Any:
    """libc's prctl, looked up here in the parent: the child, forked while the token server's
    thread runs, should do nothing between fork and exec that could wait on a lock."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so a crashed or killed pytest leaves
    no registry behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class _PortTaken(Exception):
    pass


def _wait_ready(registry: RunningRegistry, timeout: float = READY_TIMEOUT) -> None:
    """Poll ``GET /v2/`` until it answers 200 or 401 (auth modes answer 401 when up)."""
    assert registry.process is not None
    session = http.Session()
    session.trust_env = False   # a proxy from the environment must not carry loopback probes
    session.headers["User-Agent"] = PROBE_AGENT
    verify: bool | str = str(registry.ca_file) if registry.ca_file else True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            log = _tail(registry.log_path)
            if "address already in use" in log:
                raise _PortTaken()
            raise RegistryStartError(f"docker-registry ({registry.mode}) exited with "
                                     f"{registry.process.returncode}; log tail:\n{log}")
        try:
            if session.get(registry.url("/v2/"), verify=verify, timeout=2).status_code in (200, 401):
                return
        except http.RequestException:
            pass
        time.sleep(0.05)
    raise RegistryStartError(f"docker-registry ({registry.mode}) did not answer GET /v2/ on "
                             f"{registry.host} within {timeout:.0f} s; log tail:\n"
                             f"{_tail(registry.log_path)}")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _settle(path: Path, quiet: float = 0.05, limit: float = 0.5) -> None:
    """Wait until the log stops growing (at most ``limit``): the registry writes the access
    line as its handler returns, which can be just after the client has the response."""
    deadline = time.monotonic() + limit
    size = path.stat().st_size
    while time.monotonic() < deadline:
        time.sleep(quiet)
        grown = path.stat().st_size
        if grown == size:
            return
        size = grown


def _parse_requests(log: str) -> list[Request]:
    """The access-log lines among the JSON lines, without the readiness probes."""
    found = []
    for line in log.splitlines():
        match = _ACCESS_LINE.match(line)
        if match and match[4] != PROBE_AGENT:
            found.append(Request(match[1], match[2], int(match[3])))
    return found


# ---------------------------------------------------------------------------- fixtures


def _serve(mode: str, factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    require("docker-registry")
    registry = start_registry(mode, factory.mktemp(f"registry-{mode}"))
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def registry_anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Plain http, no auth."""
    yield from _serve("anonymous", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_basic_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """htpasswd basic auth over https with a test CA (``ca_file``)."""
    yield from _serve("basic-tls", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Bearer-token auth through this module's token server (``token_requests``)."""
    yield from _serve("token", tmp_path_factory)


@pytest.fixture(params=list(MODES), ids=list(MODES))
def any_registry(request: pytest.FixtureRequest) -> RunningRegistry:
    """Each of the three registries in turn (they are session-scoped: started once)."""
    registry: RunningRegistry = request.getfixturevalue(f"registry_{request.param.replace('-', '_')}")
    return registry
