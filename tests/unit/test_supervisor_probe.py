"""`python -m dream.supervisor probe PLAN`: a per-service image's health check runs the service's
readiness probe once, as the supervisor would (its user, env, working directory, the replica's
PORT), and says so in its exit code: 0 passed (or no probe), 1 not. The plain
`python -m dream.supervisor PLAN` is unchanged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dream.recipe.load import load_recipe
from dream.services.per_service import one_service_plan
from dream.services.plan import build_plan, plan_json
from dream.supervisor.plan import read_plan
from dream.supervisor.supervisor import check_readiness


def plan_file(tmp_path: Path, services: str, service: str = "a", deployment: str = "") -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    recipe = tmp_path / "recipes" / "demo.yaml"
    recipe.write_text("services:\n" + services + deployment)
    loaded = load_recipe(recipe, tmp_path)
    path = tmp_path / f"{service}.json"
    path.write_text(plan_json(one_service_plan(next(iter(loaded.deployments.values())), service)))
    return path


def probe(path: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dream.supervisor", "probe", str(path), "--root", str(root)],
                          capture_output=True, text=True, timeout=30)


@contextmanager
def listening_pair() -> Iterator[int]:
    """Two listening sockets on consecutive ports P, P + 1 (replicas' PORTs); yields P."""
    for _ in range(50):
        first, second = socket.socket(), socket.socket()
        try:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            second.bind(("127.0.0.1", port + 1))
        except OSError:
            first.close()
            second.close()
            continue
        with first, second:
            first.listen()
            second.listen()
            yield port
        return
    pytest.fail("no two consecutive free ports")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_exec_probe_passes_and_fails_by_exit_code(tmp_path: Path) -> None:
    good = plan_file(tmp_path, "  a:\n    command: x\n    readiness: {exec: 'echo fine; true'}\n")
    run = probe(good, tmp_path)
    assert run.returncode == 0, run
    assert run.stdout == "a: /bin/sh -c echo fine; true: exited with code 0: fine\n"
    bad = plan_file(tmp_path, "  a:\n    command: x\n    readiness: {exec: 'echo nope; exit 3'}\n")
    run = probe(bad, tmp_path)
    assert run.returncode == 1, run
    assert "exited with code 3: nope" in run.stdout


def test_the_probe_gets_the_environment_and_directory_the_service_gets(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    path = plan_file(
        tmp_path,
        "  first:\n    command: x\n"
        "  a:\n    command: x\n    working_dir: work\n    env: {MINE: service}\n"
        "    readiness:\n      exec: >-\n"
        "        test \"$PORT,$SHARED,$MINE,$DREAM_SERVICE,$(pwd)\" = \"7100,deployment,service,a,$EXPECT\"\n",
        deployment="deployments:\n  d:\n    port_base: 7000\n    env: {SHARED: deployment}\n")
    run = subprocess.run([sys.executable, "-m", "dream.supervisor", "probe", str(path), "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "EXPECT": str((tmp_path / "work").resolve())})
    assert run.returncode == 0, run  # PORT is the host's: a's second place in the deployment


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user needs root")
def test_the_probe_runs_as_the_service_user(tmp_path: Path) -> None:
    path = plan_file(tmp_path, "  a:\n    command: x\n    user: nobody\n"
                               "    readiness: {exec: 'test \"$(id -un)\" = nobody'}\n")
    assert probe(path, tmp_path).returncode == 0


def test_a_probe_past_its_timeout_fails_and_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    path = plan_file(tmp_path, f"  a:\n    command: x\n    readiness:\n      exec: 'sleep 2; touch {marker}'\n"
                               "      timeout: 200ms\n")
    run = probe(path, tmp_path)
    assert run.returncode == 1 and "timed out after 0.2s" in run.stdout, run
    assert not marker.exists()


def test_tcp_probe_checks_every_replica_on_its_port(tmp_path: Path) -> None:
    with listening_pair() as first:
        second = first + 1
        text = "  a:\n    command: x\n    replicas: 2\n    readiness: {tcp: {}}\n"
        path = plan_file(tmp_path, text, deployment=f"deployments:\n  d:\n    port_base: {first}\n")
        run = probe(path, tmp_path)
        assert run.returncode == 0, run
        assert run.stdout.splitlines() == [f"a.1: tcp 127.0.0.1:{first} accepts connections",
                                           f"a.2: tcp 127.0.0.1:{second} accepts connections"]
    run = probe(path, tmp_path)  # nothing listens any more
    assert run.returncode == 1, run


def test_http_probe_on_a_closed_port_fails(tmp_path: Path) -> None:
    path = plan_file(tmp_path, f"  a:\n    command: x\n    readiness: {{http: {{port: {free_port()}}}}}\n")
    run = probe(path, tmp_path)
    assert run.returncode == 1 and run.stdout.startswith("a: http 127.0.0.1:"), run


def test_no_readiness_probe_passes(tmp_path: Path) -> None:
    run = probe(plan_file(tmp_path, "  a:\n    command: x\n"), tmp_path)
    assert (run.returncode, run.stdout) == (0, "a has no readiness probe\n")


def test_an_unreadable_plan_is_a_failure_not_docker_s_reserved_2(tmp_path: Path) -> None:
    run = probe(tmp_path / "missing.json", tmp_path)
    assert run.returncode == 1 and "cannot read plan" in run.stderr, run
    two = tmp_path / "two.json"
    two.write_text('{"version": 1, "name": "d", "services": [{"name": "a", "argv": ["x"]}, {"name": "b", "argv": ["x"]}]}')
    run = probe(two, tmp_path)
    assert (run.returncode, run.stdout) == (0, "a, b have no readiness probe\n"), run


def test_a_deployment_plan_passes_only_when_every_probed_service_passes(tmp_path: Path) -> None:
    """A services layer's Healthcheck probes the whole deployment: every service with a
    readiness probe, each replica; a oneshot and a service without a probe are not probed."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "layers").mkdir()
    recipe = tmp_path / "recipes" / "demo.yaml"

    def deployment(b_exit: int) -> subprocess.CompletedProcess[str]:
        recipe.write_text("services:\n"
                          "  a:\n    command: x\n    readiness: {exec: 'echo a-ok'}\n"
                          f"  b:\n    command: x\n    replicas: 2\n    readiness: {{exec: 'echo b $PORT; exit {b_exit}'}}\n"
                          "  c:\n    command: x\n"
                          "  d:\n    command: x\n    oneshot: true\n")
        path = tmp_path / "plan.json"
        path.write_text(plan_json(build_plan(load_recipe(recipe, tmp_path).deployments["demo"], in_image=True)))
        return probe(path, tmp_path)

    good = deployment(0)
    assert good.returncode == 0, good
    assert good.stdout.splitlines() == ["a: /bin/sh -c echo a-ok: exited with code 0: a-ok",
                                        "b.1: /bin/sh -c echo b $PORT; exit 0: exited with code 0: b 5100",
                                        "b.2: /bin/sh -c echo b $PORT; exit 0: exited with code 0: b 5101"]
    bad = deployment(4)
    assert bad.returncode == 1 and "b.2: /bin/sh -c echo b $PORT; exit 4: exited with code 4: b 5101" in bad.stdout, bad


def test_check_readiness_reports_a_missing_env_file_as_a_failed_probe(tmp_path: Path) -> None:
    path = plan_file(tmp_path, "  a:\n    command: x\n    readiness: {exec: 'true'}\n")
    plan = read_plan(path)
    service = plan.services[0]
    broken = type(plan)(**{**plan.__dict__, "services": [type(service)(**{**service.__dict__, "env_files": ["nope.env"]})]})
    passed, lines = check_readiness(broken, tmp_path)
    assert not passed and lines[0].startswith("a: cannot run /bin/sh:"), lines


def test_the_plain_form_still_runs_a_deployment(tmp_path: Path) -> None:
    path = plan_file(tmp_path, "  a:\n    command: [sh, -c, 'echo ran in $DREAM_DEPLOYMENT']\n")
    plan = json.loads(path.read_text())
    path.write_text(json.dumps({**plan, "runtime_dir": str(tmp_path / "run")}))  # not the host's /run
    run = subprocess.run([sys.executable, "-m", "dream.supervisor", str(path), "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run
    assert "ran in demo" in run.stdout
