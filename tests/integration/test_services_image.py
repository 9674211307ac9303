"""Images with a services layer, in the real Docker engine: `docker run` starts the deployment
under dream's supervisor as PID 1, orphans are reaped, and `docker stop` is done within the
grace period."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Project, make_project, require, require_docker

PID1 = """
services:
  hello:
    command: [sh, -c, 'echo "hello from $DREAM_INSTANCE as $(id -un) in $(pwd)"; exec sleep 1000']
    user: nobody
    replicas: 2
  orphans:
    description: leaves children behind that exit later, so PID 1 must reap them
    command: >-
      for i in 1 2 3 4 5; do (sh -c 'sleep 0.3' &); done;
      echo orphans made; exec sleep 1000
  stubborn:
    description: ignores SIGTERM, so it is killed when its grace period ends
    command: trap '' TERM; echo stubborn; sleep 1000 & while :; do wait; done
    stop_grace_period: 2s
layers:
  - name: services
    services: {}
"""
IMAGE = "pid1-demo:latest"
CONTAINER = "dream-test-pid1"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def wait_for_logs(container: str, *needles: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    logs = ""
    while time.monotonic() < deadline:
        logs = docker("logs", container).stdout
        if all(needle in logs for needle in needles):
            return logs
        time.sleep(0.2)
    pytest.fail(f"container logs never showed {needles}:\n{logs}")


@pytest.fixture(scope="module")
def pid1_image(tmp_path_factory: pytest.TempPathFactory) -> Project:
    require_docker()
    recipe = "imports: [debian-python]\nimage: {name: pid1-demo}\n" + PID1
    project = make_project(tmp_path_factory.mktemp("pid1") / "p", {"pid1-demo.yaml": recipe}, with_demo=False)
    project.doit("lock:pid1-demo")
    project.doit("build:pid1-demo")
    project.doit("load:pid1-demo")
    return project


def test_docker_run_starts_the_deployment_and_pid1_reaps_orphans(pid1_image: Project) -> None:
    docker("rm", "-f", CONTAINER, check=False)
    docker("run", "-d", "--pull", "never", "--network", "none", "--name", CONTAINER, IMAGE)
    try:
        logs = wait_for_logs(CONTAINER, "hello from hello.2", "orphans made", "stubborn")
        assert "hello from hello.1 as nobody in /" in logs
        time.sleep(1.0)  # the orphans' sleeps have ended by now
        scan = docker("exec", CONTAINER, "python3", "-c",
                      "import os\n"
                      "for p in filter(str.isdigit, os.listdir('/proc')):\n"
                      "    s = open(f'/proc/{p}/stat').read()\n"
                      "    print(p, s[s.rfind(')') + 2], open(f'/proc/{p}/cmdline').read().replace(chr(0), ' '))").stdout
        processes = [line.split(" ", 2) for line in scan.splitlines()]
        assert [p for p in processes if p[1] == "Z"] == []  # no zombie
        assert next(p for p in processes if p[0] == "1")[2].startswith("python3 -m dream_supervisor")
        assert not any("sleep 0.3" in p[2] for p in processes)

        started = time.monotonic()
        docker("stop", "-t", "10", CONTAINER)
        took = time.monotonic() - started
        assert took < 2 + 1.5, f"docker stop took {took:.1f}s"  # stubborn's grace, not docker's 10 s
        logs = docker("logs", CONTAINER).stdout
        assert "SIGTERM received: stopping" in logs
        assert "stubborn did not stop within 2s: SIGKILL" in logs
        state = json.loads(docker("inspect", CONTAINER).stdout)[0]["State"]
        assert state["ExitCode"] == 0
    finally:
        docker("rm", "-f", CONTAINER, check=False)


def test_the_supervisor_starts_from_its_bytecode(pid1_image: Project) -> None:
    """The services layer carries the supervisor's pycs (and the Debian layer the standard
    library's): PID 1 compiles nothing at a container start; `python3 -v` names the file each
    module's code came from."""
    run = docker("run", "--rm", "--pull", "never", "--network", "none", "--read-only", "--entrypoint",
                 "python3", IMAGE, "-v", "-c", "import dream_supervisor.__main__, dream_supervisor.supervisor")
    loaded = [line.split("from ", 1)[1].strip("'") for line in run.stderr.splitlines()
              if line.startswith("# code object from ")]
    ours = [path for path in loaded if "/dream_supervisor/" in path]
    assert len(ours) >= 5 and all(path.endswith(".cpython-311.pyc") for path in ours), ours
    assert [path for path in loaded if not path.endswith(".pyc")] == []


PROCESSES = ("import os\n"
             "for p in filter(str.isdigit, os.listdir('/proc')):\n"
             "    try:\n"
             "        s = open(f'/proc/{p}/stat').read()\n"
             "        print(p, s[s.rfind(')') + 2], open(f'/proc/{p}/cmdline').read().replace(chr(0), ' '))\n"
             "    except OSError:\n"
             "        pass\n")


def processes_in(container: str) -> dict[int, tuple[str, str]]:
    """pid -> (state, command line) of every process in ``container`` but the scan itself."""
    scan = docker("exec", container, "python3", "-c", PROCESSES).stdout
    found = {}
    for line in scan.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit() and not parts[2].startswith("python3 -c"):
            found[int(parts[0])] = (parts[1], parts[2].strip())
    return found


def test_docker_kill_hup_restarts_the_services_and_keeps_the_container(pid1_image: Project) -> None:
    """Issue 12, defect 12: `docker kill -s HUP` used to end the container with exit 1. SIGHUP is
    forwarded; a service without a handler ends on it and is started again, the deployment and
    PID 1 stay, and a later `docker stop` still ends it with exit 0."""
    name = CONTAINER + "-hup"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--pull", "never", "--network", "none", "--name", name, IMAGE)
    try:
        wait_for_logs(name, "hello from hello.1", "hello from hello.2", "orphans made", "stubborn")
        time.sleep(0.5)
        before = processes_in(name)
        assert before[1][1].startswith("python3 -m dream_supervisor")
        sleepers = sorted(pid for pid, (_, cmd) in before.items() if cmd == "sleep 1000")
        assert len(sleepers) == 4  # hello.1, hello.2, orphans and stubborn's child

        for round_ in (1, 2):  # twice: the second HUP meets the restarted services
            docker("kill", "-s", "HUP", name)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                logs = docker("logs", name).stdout
                if (logs.count("ended on the forwarded SIGHUP: starting it again") == 4 * round_
                        and logs.count("hello from hello.1") == round_ + 1 and logs.count("stubborn\n") >= round_ + 1):
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"the services were not all started again after SIGHUP {round_}:\n{logs}")
            for service in ("hello.1", "hello.2", "orphans", "stubborn"):
                assert f"{service} ended on the forwarded SIGHUP: starting it again" in logs
            time.sleep(0.5)
            assert docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true", logs
            after = processes_in(name)
            assert after[1][1].startswith("python3 -m dream_supervisor")  # the same PID 1
            assert [p for p, (state, _) in after.items() if state == "Z"] == []
            now = sorted(pid for pid, (_, cmd) in after.items() if cmd == "sleep 1000")
            assert len(now) == 4 and not set(now) & set(sleepers), (before, after)  # new processes, none left over
            sleepers = now
        assert "Traceback" not in docker("logs", name).stdout + docker("logs", name).stderr

        docker("stop", "-t", "10", name)
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        logs = docker("logs", name).stdout
        assert state["ExitCode"] == 0, logs
        assert "SIGTERM received: stopping" in logs and "stopped (exit code 0)" in logs
    finally:
        docker("rm", "-f", name, check=False)


def test_image_config_runs_the_supervisor(pid1_image: Project) -> None:
    config = json.loads(docker("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["Cmd"] == ["python3", "-m", "dream_supervisor", "/etc/dream/deployments/pid1-demo.json"]
    assert config["Labels"]["dev.dream.deployment"] == "pid1-demo"
    # `docker run <image> <command>` still runs just that command
    out = docker("run", "--rm", "--pull", "never", "--network", "none", IMAGE, "echo", "plain").stdout
    assert out == "plain\n"


def test_a_base_without_python_is_refused(tmp_path: Path) -> None:
    recipe = ("image: {name: nopy}\nlayers:\n  - name: debian\n    debian: {packages: [bash]}\n"
              "  - name: services\n    services: {}\nservices:\n  x: {command: [true]}\n")
    project = make_project(tmp_path / "p", {"nopy.yaml": recipe}, with_demo=False)
    project.doit("lock:nopy")
    run = project.doit("build:nopy", check=False)
    assert run.returncode != 0
    assert "the supervisor needs python3" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


SSH_DEPLOYMENT = """
imports: [debian-python, sshd, notebook]
image: {name: sshd-demo}
deployments:
  box: {services: [sshd, notebook], user: nobody}
layers:
  - name: services
    services: {deployment: box}
"""


@pytest.fixture(scope="module")
def sshd_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    require_docker()
    project = make_project(tmp_path_factory.mktemp("sshd") / "p", {"sshd-demo.yaml": SSH_DEPLOYMENT},
                           with_demo=False)
    project.doit("lock:sshd-demo")
    project.doit("build:sshd-demo")
    project.doit("load:sshd-demo")
    return "sshd-demo:latest"


def test_sshd_preset_takes_keys_from_env_and_the_notebook_answers(sshd_image: str, tmp_path: Path) -> None:
    keygen = require("ssh-keygen")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    public = (tmp_path / "key.pub").read_text().strip()
    name = "dream-test-sshd"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--pull", "never", "--network", "none", "--name", name,
           "-e", f"SSH_AUTHORIZED_KEYS={public}", "-e", "NOTEBOOK_TOKEN=secret-token", sshd_image)
    try:
        wait_for_logs(name, "sshd is ready", "notebook is ready")
        subprocess.run(["docker", "cp", str(tmp_path / "key"), f"{name}:/tmp/key"], check=True)
        login = docker("exec", name, "ssh", "-i", "/tmp/key", "-o", "StrictHostKeyChecking=no",
                       "-o", "BatchMode=yes", "root@127.0.0.1", "id -un", check=False)
        assert login.stdout.strip() == "root", login.stderr
        no_key = docker("exec", name, "ssh", "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes",
                        "-o", "PasswordAuthentication=yes", "root@127.0.0.1", "true", check=False)
        assert no_key.returncode != 0 and "Permission denied" in no_key.stderr
        status = docker("exec", name, "python3", "-c",
                        "import urllib.request as u\n"
                        "print(u.urlopen('http://127.0.0.1:8888/api/status').status)\n"
                        "try: u.urlopen('http://127.0.0.1:8888/')\n"
                        "except Exception as e: print(e.code)\n"
                        "print(u.urlopen('http://127.0.0.1:8888/?token=secret-token').status)").stdout.split()
        assert status == ["200", "403", "200"]
        owner = docker("exec", name, "stat", "-c", "%U", "/data/workspace").stdout.strip()
        assert owner == "nobody"  # the volume belongs to the deployment's user
    finally:
        docker("rm", "-f", name, check=False)


def test_sshd_without_keys_says_so_and_the_rest_runs(sshd_image: str) -> None:
    name = "dream-test-sshd-nokeys"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--pull", "never", "--network", "none", "--name", name, sshd_image)
    try:
        logs = wait_for_logs(name, "notebook is ready", "not starting sshd")
        assert "sshd completed" in logs or "sshd exited with code 0" in logs
        assert docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
    finally:
        docker("rm", "-f", name, check=False)
