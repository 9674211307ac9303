"""Probes and their verdicts. In the supervisor, network probes (http, tcp) run in short-lived
threads so a slow endpoint never stalls the loop, and the result is posted back to the loop;
exec probes are processes, run by the supervisor itself (only the loop may spawn and reap),
judged here (`exec_verdict`). ``probe`` (an engine's health check) runs one probe once, with
no loop: `network_probe` called directly, `exec_once` waiting for its one child."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from .plan import JsonCheck, Probe
from .procs import Identity, describe_status, signal_group, spawn

Result = Callable[[bool, str], None]
KEPT_OUTPUT = 400  # bytes of an exec probe's output kept for its last line
MAX_BODY = 1 << 20  # bytes of an http probe's body read for its json check


def check_network(probe: Probe, port: int, done: Result) -> None:
    """Run an http or tcp ``probe`` against ``port`` in a thread; ``done(ok, detail)`` is called
    from that thread (the caller posts it to the loop)."""
    threading.Thread(target=lambda: done(*network_probe(probe, port)), daemon=True).start()


def network_probe(probe: Probe, port: int) -> tuple[bool, str]:
    """One http or tcp attempt against ``port``: (passed, what happened); it never raises."""
    target = _http if probe.kind == "http" else _tcp
    try:
        return target(probe, port)
    except OSError as exc:
        return False, f"{probe.kind} {probe.host}:{port}: {exc or type(exc).__name__}"
    except Exception as exc:  # an unexpected answer must count as a failed probe, not kill a thread
        return False, f"{type(exc).__name__}: {exc}"


def exec_verdict(probe: Probe, status: int | None, output: bytes) -> tuple[bool, str]:
    """An exec probe's verdict from its wait status (None: it ran past its timeout and was
    killed) and the end of its output, whose last line the detail quotes."""
    if status is None:
        return False, f"{' '.join(probe.argv)}: timed out after {probe.timeout:g}s"
    code, words = describe_status(status)
    last = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return code == 0, f"{' '.join(probe.argv)}: {words}" + (f": {last[0]}" if last[0] else "")


def exec_once(probe: Probe, env: dict[str, str], cwd: str, who: Identity | None) -> tuple[bool, str]:
    """Run an exec ``probe`` once and wait for it (at most its timeout; then its process group
    is killed). Its output is drained in a thread, so a chatty probe cannot fill the pipe and
    stall; the verdict follows its exit, not the pipe's end (a child it left may hold that)."""
    proc = spawn(probe.argv, env, cwd, who)
    stream = proc.stdout
    assert stream is not None
    captured = bytearray()

    def drain() -> None:  # it owns the pipe: closed at its end, never under a blocked read
        with stream:
            for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
                captured.extend(chunk)
                del captured[:-KEPT_OUTPUT]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + probe.timeout
    status: int | None = None
    while status is None and time.monotonic() < deadline:
        pid, found = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            status = found
        else:
            time.sleep(0.01)
    signal_group(proc.pid, signal.SIGKILL)  # a timed-out probe, or what it left in its group
    if status is None:
        os.waitpid(proc.pid, 0)
    proc.returncode = -signal.SIGKILL if status is None else describe_status(status)[0]  # reaped here
    reader.join(1.0)
    return exec_verdict(probe, status, bytes(captured))


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
        response = connection.getresponse()
        status = response.status
        body = response.read(MAX_BODY + 1) if probe.json is not None and 200 <= status < 400 else b""
    finally:
        connection.close()
    url = f"{probe.scheme}://{probe.host}:{port}{probe.path}"
    if not 200 <= status < 400 or probe.json is None:
        return 200 <= status < 400, f"GET {url} answered {status}"
    ok, detail = json_verdict(probe.json, body)
    return ok, f"GET {url} answered {status}, {detail}"


def json_verdict(check: JsonCheck, body: bytes) -> tuple[bool, str]:
    """Whether ``body`` is JSON whose value at ``check.field`` equals ``check.equals``: (passed,
    what was found). A boolean equals only a boolean (``true`` is not ``1``)."""
    want = json.dumps(check.equals)
    if len(body) > MAX_BODY:
        return False, f"a body over {MAX_BODY} bytes (wanted {check.field} = {want})"
    try:
        value: Any = json.loads(body.decode("utf-8"))
    except ValueError:
        text = body[:60].decode(errors="replace")
        return False, f"a body that is not JSON ({text!r}; wanted {check.field} = {want})"
    for key in check.field.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False, f"no {check.field} in its JSON (wanted {want})"
    same = value == check.equals and isinstance(value, bool) == isinstance(check.equals, bool)
    return same, f"{check.field} = {json.dumps(value)[:80]}" + ("" if same else f" (wanted {want})")
