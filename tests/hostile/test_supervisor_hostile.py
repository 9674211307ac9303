"""Hostile inputs and hostile ends for dream's supervisor (issue 12, defects 3, 7 and the
supervisor's parts of 11 and 12): each case asserts the exact outcome — one line, the exit code,
and that nothing it started outlives it (a marker in /proc/*/environ, as tests/integration/
test_supervisor.py checks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.recipe.load import load_recipe
from dream.supervisor import runstate
from dream.supervisor.dotenv import EnvFileError, parse_env, read_env_file
from dream.supervisor.plan import plan_from_json, signal_number
from dream.supervisor.supervisor import restart_delay
from tests.conftest import make_project, require
from tests.integration.test_supervisor import Harness, processes_with

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


def gone_within(token: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = processes_with(token)
        if not left:
            return []
        time.sleep(0.05)
    return processes_with(token)


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def load_error(tmp_path: Path, text: str) -> str:
    root = tmp_path / "p"
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(exist_ok=True)
    path = root / "recipes" / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DreamError) as caught:
        load_recipe(path, root)
    return str(caught.value)


# -- 7: SIGKILL of the supervisor leaves nothing running -------------------------------------

THREE = """\
services:
  plain:
    command: exec sleep 300
  forks:
    command: |
      sleep 300 &
      "$PY" -c 'import os, time; os.fork() or time.sleep(300); time.sleep(300)' &
      echo forked; wait
  escapes:
    command: |
      exec "$PY" -c '
      import os, time
      if os.fork() == 0:
          os.setsid()
          if os.fork() == 0:
              time.sleep(300)
          os._exit(0)
      print("escaped", flush=True)
      time.sleep(300)'
"""


def _killed_run(harness: Harness) -> tuple[object, Path]:
    plan = harness.recipe(THREE)
    run = harness.start(plan)
    run.wait_for("^forked$", "forks")
    run.wait_for("^escaped$", "escapes")
    time.sleep(1.5)  # one run-state refresh sees the escaped grandchild
    assert len(processes_with(harness.token)) >= 8  # supervisor, watchdog, 3 leaders, grandchildren
    state = harness.root / ".dream" / "run" / "demo" / "run-state.json"
    assert state.exists()
    return run, state


def test_sigkill_of_the_supervisor_kills_every_service_and_grandchild(harness: Harness) -> None:
    run, state = _killed_run(harness)
    run.proc.kill()  # type: ignore[attr-defined]
    run.proc.wait()  # type: ignore[attr-defined]
    left = gone_within(harness.token, 5)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left if Path(f"/proc/{p}").exists()]
    assert not state.exists()  # the watchdog cleaned up and removed it


def test_the_next_run_cleans_what_a_crashed_run_left(harness: Harness) -> None:
    run, state = _killed_run(harness)
    record = json.loads(state.read_text())
    os.kill(record["watchdog"], signal.SIGKILL)  # the watchdog dies too (OOM, kill -9 of all)
    time.sleep(0.2)
    run.proc.kill()  # type: ignore[attr-defined]
    run.proc.wait()  # type: ignore[attr-defined]
    time.sleep(0.5)
    orphans = processes_with(harness.token)
    assert orphans, "the leaders die with the supervisor, their children were expected to linger"
    second = harness.start(harness.root / "plan.json")
    second.wait_for(r"^a crashed run of demo left \d+ processes: killed them$", "dream")
    second.wait_for("^forked$", "forks")
    assert not [p for p in orphans if Path(f"/proc/{p}").exists() and runstate.proc_stat(p)]
    second.signal(signal.SIGTERM)
    assert second.wait(15) == 0
    harness.assert_nothing_left()


def test_a_second_run_beside_a_live_one_is_refused(harness: Harness) -> None:
    plan = harness.recipe("services:\n  a:\n    command: exec sleep 300\n")
    first = harness.start(plan)
    first.wait_for("^a started")
    second = harness.start(plan)
    assert second.wait(10) == 2
    assert "cannot start deployment demo: it already runs (supervisor pid" in second.output
    first.wait_for("^a started")
    assert first.proc.poll() is None
    first.signal(signal.SIGTERM)
    assert first.wait(15) == 0
    harness.assert_nothing_left()


def test_sigkill_of_doit_run_procfile_kills_every_service(tmp_path: Path) -> None:
    token = f"dreamtest-{os.urandom(8).hex()}"
    project = make_project(tmp_path / "p", {"three.yaml": THREE}, with_demo=False)
    doit = subprocess.Popen([sys.executable, "-m", "doit", "run:procfile"], cwd=project.root,
                            env={**os.environ, "DREAM_TEST_RUN": token, "PY": sys.executable,
                                 "DREAM_STORE": str(project.store)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while len(processes_with(token)) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(processes_with(token)) >= 8
        time.sleep(1.2)
        doit.kill()
        doit.wait()
        assert not gone_within(token, 5)
    finally:
        for pid in processes_with(token):
            os.kill(pid, signal.SIGKILL)


# -- 3: nothing a user writes crashes the supervisor ---------------------------------------

def test_nul_in_an_env_file_value_is_one_line(harness: Harness) -> None:
    harness.file("bad.env", "GOOD=1\nBAD=a\0b\n")
    run, code = harness.run("services:\n  a:\n    command: exec true\n    env_files: [bad.env]\n")
    assert code == 1
    assert f"a could not start ({harness.root}/bad.env:2: BAD: a NUL character cannot be in an environment value)" in run.output
    no_traceback(run.output + run.stderr)


def test_nul_in_a_plan_value_is_one_line(harness: Harness) -> None:
    plan = harness.recipe("services:\n  a:\n    command: exec true\n")
    data = json.loads(plan.read_text())
    data["services"][0]["env"] = {"X": "a\0b"}
    plan.write_text(json.dumps(data))
    run = harness.start(plan)
    assert run.wait(10) == 1
    assert "a could not start (embedded null byte)" in run.output
    no_traceback(run.output + run.stderr)
    harness.assert_nothing_left()


def test_non_utf8_env_file_is_one_line(harness: Harness) -> None:
    (harness.root / "latin.env").write_bytes(b"A=1\nB=caf\xe9\n")
    run, code = harness.run("services:\n  a:\n    command: exec true\n    env_files: [latin.env]\n")
    assert code == 1
    assert f"a could not start ({harness.root}/latin.env:2: not UTF-8 (byte 0xe9); env files are UTF-8 text)" in run.output
    no_traceback(run.output + run.stderr)


def test_env_file_with_a_bom_is_read(harness: Harness) -> None:
    (harness.root / "bom.env").write_bytes(b"\xef\xbb\xbfFIRST=one\r\nSECOND=two\r\n")
    run, code = harness.run("services:\n  a:\n    command: echo \"[$FIRST][$SECOND]\"\n"
                            "    env_files: [bom.env]\n")
    assert code == 0, run.output
    assert run.texts("a") == ["[one][two]"]


def test_stop_signal_sigbogus_in_a_plan_is_one_line(harness: Harness) -> None:
    plan = harness.recipe("services:\n  a:\n    command: exec true\n")
    data = json.loads(plan.read_text())
    data["services"][0]["stop_signal"] = "SIGBOGUS"
    plan.write_text(json.dumps(data))
    run = harness.start(plan)
    assert run.wait(10) == 2
    assert run.stderr.strip().splitlines() == [
        f"dream-supervisor: cannot read plan {plan}: 'SIGBOGUS' is not a signal of this system "
        "(SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGKILL … or a number from 1 to "
        f"{int(signal.SIGRTMAX)})"]


@pytest.mark.parametrize("broken", ["{", "[]", '{"version": 1}', '{"version": 1, "name": "x", "services": [{}]}',
                                    '{"version": 1, "name": "x", "services": 3}'])
def test_a_broken_plan_is_one_line(harness: Harness, broken: str) -> None:
    plan = harness.root / "plan.json"
    plan.write_text(broken)
    run = harness.start(plan)
    assert run.wait(10) == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dream-supervisor: cannot read plan {plan}: "), run.stderr


def test_restart_delay_never_overflows() -> None:
    plan = plan_from_json({"version": 1, "name": "x", "services": [
        {"name": "a", "argv": ["true"], "backoff": 0.001, "max_backoff": 0.001, "max_restarts": 0}]})
    service = plan.services[0]
    assert restart_delay(service, 1025) == 0.01    # was OverflowError: 2 ** 1024 as a float
    assert restart_delay(service, 10 ** 6) == 0.01
    zero = plan_from_json({"version": 1, "name": "x", "services": [
        {"name": "a", "argv": ["true"], "backoff": 0, "max_backoff": 0}]}).services[0]
    assert restart_delay(zero, 1) == 0.01          # a hand-written plan with backoff 0 cannot spin


def test_unlimited_restarts_keep_going_at_the_cap(harness: Harness) -> None:
    plan = harness.recipe("services:\n  a:\n    command: exit 3\n    restart: always\n"
                          "    max_restarts: 0\n    backoff: 10ms\n    max_backoff: 100ms\n")
    run = harness.start(plan)
    run.wait_for(r"^a exited with code 3; restart 12 in 0\.10s$", "dream", timeout=10)
    run.signal(signal.SIGTERM)
    assert run.wait(10) == 0
    harness.assert_nothing_left()


def test_an_internal_error_kills_every_service_and_is_one_line(tmp_path: Path, capfd) -> None:
    from dream.supervisor.supervisor import Supervisor
    token = f"dreamtest-{os.urandom(8).hex()}"
    plan = plan_from_json({"version": 1, "name": "boom", "runtime_dir": ".run", "services": [
        {"name": "a", "argv": ["sh", "-c", "sleep 300 & exec sleep 300"], "env": {"DREAM_TEST_RUN": token},
         "readiness": {"kind": "exec", "argv": ["true"], "initial_delay": 0.3, "period": 1, "timeout": 1,
                       "success_threshold": 1, "failure_threshold": 3}}]})

    class Broken(Supervisor):
        def probed(self, *args: object) -> None:
            raise RuntimeError("a bug")

    pid = os.fork()  # the supervisor kills every process below its own: not pytest's registries
    if pid == 0:
        code = 99
        try:
            code = Broken(plan, tmp_path).run()
        finally:
            sys.stdout.flush()
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3
    out = capfd.readouterr().out
    assert (f"internal error: RuntimeError: a bug (details in {tmp_path}/.run/supervisor-error.log); "
            "every service was killed (exit code 3)") in out
    no_traceback(out)
    assert "Traceback" in (tmp_path / ".run" / "supervisor-error.log").read_text()
    assert not gone_within(token, 3)
    assert not (tmp_path / ".run" / "run-state.json").exists()


# -- 11: values the schema refuses ---------------------------------------------------------

@pytest.mark.parametrize("value", ["SIGBOGUS", "SIGRTMIN+99", "0", "99", "SIGKIL"])
def test_unknown_stop_signals_are_refused(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f"services:\n  a:\n    command: x\n    stop_signal: '{value}'\n")
    assert message.startswith("recipes/bad.yaml:4: services.a.stop_signal: ") or \
        "services.a.stop_signal" in message, message
    assert "is not a signal of this system" in message, message


@pytest.mark.parametrize("value", ["SIGTERM", "SIGUSR1", "SIGRTMIN+3", "SIGRTMAX-1", "9", "SIGKILL"])
def test_real_stop_signals_are_accepted(tmp_path: Path, value: str) -> None:
    root = tmp_path / "p"
    (root / "recipes").mkdir(parents=True)
    path = root / "recipes" / "ok.yaml"
    path.write_text(f"services:\n  a:\n    command: x\n    stop_signal: '{value}'\n")
    recipe = load_recipe(path, root)
    assert recipe.deployments["ok"] is not None
    assert signal_number(value) in signal.valid_signals()


@pytest.mark.parametrize("field,value,words", [
    ("backoff", "0", "must be at least 10ms"), ("backoff", "5ms", "must be at least 10ms"),
    ("max_backoff", "0", "must be at least 100ms"), ("max_backoff", "50ms", "must be at least 100ms")])
def test_backoffs_that_spin_are_refused(tmp_path: Path, field: str, value: str, words: str) -> None:
    message = load_error(tmp_path, f"services:\n  a:\n    command: x\n    {field}: {value}\n")
    assert f"services.a.{field}" in message and words in message, message


def test_nul_in_a_recipe_env_value_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'services:\n  a:\n    command: x\n    env:\n      X: "a\\0b"\n')
    assert "services.a.env.X" in message and "a NUL character cannot be in an environment value" in message


def test_nul_in_a_deployment_env_value_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'services:\n  a:\n    command: x\ndeployments:\n  d:\n'
                                   '    env:\n      X: "a\\0b"\n')
    assert "deployments.d.env.X" in message and "NUL" in message


# -- env files: the dialect's edges --------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("\ufeffA=1\n", {"A": "1"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ('A="x\x0cy"\n', {"A": "x\x0cy"}),
    ("A='a\u2028b'\n", {"A": "a\u2028b"}),
    ('A="a\\rb"\n', {"A": "a\rb"}),
])
def test_env_file_edges(text: str, expected: dict[str, str]) -> None:
    assert parse_env(text) == expected


def test_env_file_unreadable_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match=r"env file .*missing.env: No such file or directory"):
        read_env_file(tmp_path / "missing.env")


# -- 12: SIGHUP means reload, never the end of the deployment --------------------------------

def test_sighup_restarts_services_without_a_handler_and_keeps_the_deployment(harness: Harness) -> None:
    plan = harness.recipe("services:\n  plain:\n    command: exec sleep 300\n"
                          "  handles:\n    command: |\n      trap 'echo reloaded' HUP\n"
                          "      while true; do sleep 0.1; done\n")
    run = harness.start(plan)
    run.wait_for("^plain started")
    run.wait_for("^handles started")
    time.sleep(0.3)
    run.signal(signal.SIGHUP)
    run.wait_for("^plain ended on the forwarded SIGHUP: starting it again$", "dream")
    run.wait_for("^plain started", "dream", count=2)
    run.wait_for("^reloaded$", "handles")
    time.sleep(0.3)
    assert run.proc.poll() is None, run.output
    run.signal(signal.SIGTERM)
    assert run.wait(15) == 0, run.output
    harness.assert_nothing_left()


# -- 12: a carriage return in the deployment's env and honcho --------------------------------

DUMP = """\
import json, os
with open(os.environ["T_OUT"], "w") as f:
    json.dump({k: os.environ[k] for k in os.environ if k.startswith("T_")}, f)
"""


def test_carriage_return_in_deployment_env_reaches_honcho_and_dream_alike(tmp_path: Path) -> None:
    honcho = require("honcho")
    out = tmp_path / "out.json"
    project = make_project(tmp_path / "p", {"cr.yaml": json.dumps({
        "deployments": {"cr": {"env": {"T_CR": "a\rb", "T_FF": "c\x0cd", "T_PLAIN": "p"}}},
        "services": {"dump": {"command": [sys.executable, "dump.py"], "env": {"T_OUT": str(out)},
                              "allowed_to_exit": True}}})}, with_demo=False)
    (project.root / "dump.py").write_text(DUMP)
    project.doit("render:procfile", "-d", "cr")
    folder = project.root / "build" / "cr" / "procfile"
    assert "\r" not in (folder / ".env").read_text() and "T_CR" not in (folder / ".env").read_text()
    run = subprocess.Popen([honcho, "-d", str(folder), "start"], cwd=project.root,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=15)
    under_honcho = json.loads(out.read_text())
    out.unlink()
    project.doit("run:procfile", "-d", "cr")
    under_dream = json.loads(out.read_text())
    assert under_honcho == under_dream
    assert under_dream["T_CR"] == "a\rb" and under_dream["T_FF"] == "c\x0cd" and under_dream["T_PLAIN"] == "p"
