"""The Redis preset and the app that waits for it, run for real by `doit run:procfile`, and
stopped cleanly by SIGINT (Ctrl-C)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, make_project, require


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_processes(port: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "redis-server" in command and f":{port}" in command:
            found.append(command)
    return found


@pytest.fixture
def demo(tmp_path: Path):
    require("redis-server")
    redis_port, app_port = free_port(), free_port()
    text = (REPO / "recipes" / "services-demo.yaml").read_text()
    text = text.replace('REDIS_PORT: "6379"', f'REDIS_PORT: "{redis_port}"\n    port_base: {app_port - 100}')
    project = make_project(tmp_path / "p", {"services-demo.yaml": text}, with_demo=False)
    shutil.copytree(REPO / "recipes" / "services-demo", project.root / "recipes" / "services-demo")
    return project, redis_port, app_port


def test_app_waits_for_healthy_redis_and_sigint_stops_both(demo) -> None:
    project, redis_port, app_port = demo
    run = subprocess.Popen([sys.executable, "-m", "doit", "run:procfile"], cwd=project.root, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env={**os.environ, "DREAM_STORE": str(project.store)})
    lines: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line.rstrip("\n"))
            if "counting hits on port" in line:
                break
        else:
            pytest.fail("the app never served:\n" + "\n".join(lines))
        with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/", timeout=5) as answer:
            assert re.fullmatch(r"hits: \d+\n", answer.read().decode())
        assert len(redis_processes(redis_port)) == 1
    finally:
        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=20)
    lines += rest.splitlines()
    text = "\n".join(lines)
    assert run.returncode == 0, text

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    # Redis said it was ready, the probe passed, and only then the app started and talked to it.
    assert first(r"redis +\| .*Ready to accept connections") < first(r"dream +\| redis is ready") \
        < first(r"dream +\| app started") < first(r"app +\| redis says PONG; start number 1")
    assert first(r"SIGINT received: stopping") < first(r"redis +\| .*DB saved on disk")
    assert "app stopped" in text and "redis stopped (exited with code 0)" in text
    assert "stopped (exit code 0)" in text
    assert redis_processes(redis_port) == []
    assert (project.root / "data" / "redis" / "dump.rdb").exists()  # the persistent volume

    # The data survives: a second run counts a second start.
    run = subprocess.Popen([sys.executable, "-m", "doit", "run:procfile", "-d", "db-app"], cwd=project.root,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env={**os.environ, "DREAM_STORE": str(project.store)})
    assert run.stdout is not None
    deadline = time.monotonic() + 20
    seen = ""
    for line in run.stdout:
        seen += line
        if "redis says PONG" in line or time.monotonic() > deadline:
            break
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=20)
    assert "start number 2" in seen
