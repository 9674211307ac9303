"""Network probes (http, tcp), run in short-lived threads so a slow endpoint never stalls the
loop; the result is posted back to the loop. Exec probes are processes and are run by the
supervisor itself (only the loop may spawn and reap)."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Callable

from .plan import Probe

Result = Callable[[bool, str], None]


def check_network(probe: Probe, port: int, done: Result) -> None:
    """Run an http or tcp ``probe`` against ``port`` in a thread; ``done(ok, detail)`` is called
    from that thread (the caller posts it to the loop)."""
    target = _http if probe.kind == "http" else _tcp
    threading.Thread(target=_guard, args=(target, probe, port, done), daemon=True).start()


def _guard(target: Callable[[Probe, int], tuple[bool, str]], probe: Probe, port: int, done: Result) -> None:
    try:
        ok, detail = target(probe, port)
    except OSError as exc:
        ok, detail = False, f"{probe.kind} {probe.host}:{port}: {exc or type(exc).__name__}"
    except Exception as exc:  # an unexpected answer must count as a failed probe, not kill a thread
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    done(ok, detail)


def _tcp(probe: Probe, port: int) -> tuple[bool, str]:
    with socket.create_connection((probe.host, port), timeout=probe.timeout):
        return True, f"tcp {probe.host}:{port} accepts connections"


def _http(probe: Probe, port: int) -> tuple[bool, str]:
    if probe.scheme == "https":  # like Kubernetes, an https probe does not verify the certificate
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            probe.host, port, timeout=probe.timeout, context=ssl._create_unverified_context())
    else:
        connection = http.client.HTTPConnection(probe.host, port, timeout=probe.timeout)
    try:
        connection.request("GET", probe.path, headers={"User-Agent": "dream-probe"})
        status = connection.getresponse().status
    finally:
        connection.close()
    url = f"{probe.scheme}://{probe.host}:{port}{probe.path}"
    return 200 <= status < 400, f"GET {url} answered {status}"
