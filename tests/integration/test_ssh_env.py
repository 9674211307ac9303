"""A box you can log into: ssh sessions, `su - dev`, tmux and `docker exec` see the container's
environment (the image's Env, `docker run -e` variables), not sshd's clean one.

The image is small (Debian + Python, the default home, the sshd preset) with CUDA-like variables
set through image.env; the real GPU image is checked in test_gpu_image_over_ssh below. sshd
listens on a free port of the host (``--network host -e SSH_PORT=…``) and the test logs in from
here with a key made for it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import Project, make_project, require, require_docker

pytestmark = pytest.mark.integration

PATH = "/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECIPE = """
imports: [debian-python, home-default, sshd]
image:
  name: ssh-env
  user: root
  env:
    CUDA_VERSION: "12.9.1"
    NVIDIA_VISIBLE_DEVICES: all
    LD_LIBRARY_PATH: /usr/local/cuda/lib64
    PATH: {path}
    DREAM_SPACED: two "quoted" words
deployments:
  box: {{services: [sshd], user: dev}}
services:
  sshd:
    env: {{SSH_USER: dev}}
layers:
  - name: services
    services: {{deployment: box}}
"""
WANTED = {"CUDA_VERSION": "12.9.1", "NVIDIA_VISIBLE_DEVICES": "all", "PATH": PATH,
          "LD_LIBRARY_PATH": "/usr/local/cuda/lib64", "DREAM_SPACED": 'two "quoted" words',
          "DREAM_RUNTIME": "from docker run"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def wait_for(name: str, text: str) -> str:
    logs = ""
    for _ in range(150):
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        if text in logs:
            return logs
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the logs:\n{logs}")


class Box:
    """A running container with sshd on ``port``, and an ssh client with the matching key."""

    def __init__(self, name: str, port: int, key: Path) -> None:
        self.name, self.port, self.key = name, port, key

    def ssh(self, command: str, user: str = "dev") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             f"{user}@127.0.0.1", command], capture_output=True, text=True, timeout=60)

    def exec(self, *command: str) -> str:
        return subprocess.run(["docker", "exec", self.name, *command], capture_output=True,
                              text=True, check=True, timeout=60).stdout


def start_box(image: str, name: str, key: Path, *extra: str) -> Box:
    port = free_port()
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--pull", "never", "--network", "host", "--name", name,
                    "-e", f"SSH_PORT={port}",
                    "-e", f"SSH_AUTHORIZED_KEYS={key.with_suffix('.pub').read_text().strip()}",
                    "-e", "DREAM_RUNTIME=from docker run", *extra, image],
                   check=True, capture_output=True)
    wait_for(name, "sshd is ready")
    return Box(name, port, key)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("ssh")
    path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run([require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    require("apt-get")
    require_docker()
    built = make_project(tmp_path_factory.mktemp("ssh") / "p", {"ssh-env.yaml": RECIPE.format(path=PATH)},
                         with_demo=False)
    built.doit("lock:ssh-env")
    built.doit("load:ssh-env")
    return built


@pytest.fixture(scope="module")
def box(project: Project, key: Path) -> Iterator[Box]:
    started = start_box("ssh-env:latest", "dream-test-ssh-env", key)
    yield started
    subprocess.run(["docker", "rm", "-f", started.name], capture_output=True)


def test_an_ssh_command_sees_the_image_environment(box: Box) -> None:
    run = box.ssh("echo $CUDA_VERSION; env")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "12.9.1"
    env = environment(run.stdout)
    assert {name: env.get(name) for name in WANTED} == WANTED
    assert env["USER"] == "dev" and env["HOME"] == "/home/dev"  # sshd's own, not the service's
    assert env["EDITOR"] == "vi"  # the home's env, from ~/.bashrc, also without a terminal
    assert "SSH_AUTHORIZED_KEYS" not in env and "DREAM_CONFIG_DIR" not in env


def test_a_login_shell_sees_it_although_etc_profile_resets_path(box: Box) -> None:
    # base-files' /etc/profile (installed by dream's fix-ups, as its postinst would) resets PATH
    # and then sources /etc/profile.d/*.sh, where the start script put the environment back
    assert "PATH=" in box.exec("cat", "/etc/profile")
    env = environment(box.ssh("bash -lc env").stdout)
    su = environment(box.exec("su", "-", "dev", "-c", "env"))
    assert {name: env.get(name) for name in WANTED} == WANTED
    assert {name: su.get(name) for name in WANTED} == WANTED


def test_su_dash_tmux_and_docker_exec_see_it(box: Box) -> None:
    su = environment(box.exec("su", "-", "dev", "-c", "env"))
    assert {name: su.get(name) for name in WANTED} == WANTED and su["USER"] == "dev"
    tmux = box.exec("su", "-", "dev", "-c",
                    "tmux new-session -d 'env > /tmp/tmux-env'; sleep 1; cat /tmp/tmux-env")
    assert {name: environment(tmux).get(name) for name in WANTED} == WANTED
    exec_env = environment(box.exec("env"))
    assert {name: exec_env.get(name) for name in WANTED} == WANTED
    pam = box.exec("cat", "/etc/environment").splitlines()  # what su's pam_env read
    assert "CUDA_VERSION=12.9.1" in pam and 'DREAM_SPACED=two "quoted" words' in pam


def test_doit_shell_runs_on_the_current_directory_as_the_home_user(project: Project) -> None:
    (project.root / "marker").write_text("from the host\n")
    run = project.doit("shell:ssh-env", "--cmd", "id -un; pwd; cat marker; echo $CUDA_VERSION $EDITOR",
                       "--network", "none")
    out = run.stdout.splitlines()
    assert out[-4:] == ["dev", "/workspace", "from the host", "12.9.1 vi"], run.stdout
    assert "-- load:ssh-env" in out  # loaded already: the engine's image is the store's, not re-sent
    failed = project.doit("shell:ssh-env", "--cmd", "exit 3", "--network", "none", check=False)
    assert failed.returncode != 0 and "shell:ssh-env: the command exited with code 3" in failed.stdout + failed.stderr


def test_gpu_image_over_ssh(tmp_path_factory: pytest.TempPathFactory, key: Path) -> None:
    """The reference image as dev over ssh: CUDA_VERSION is set, cuBLAS loads, and a driver
    mounted the nvidia/cuda way (here a stand-in libcuda.so.1) is found: the entrypoint's fix-up."""
    require("apt-get")
    require_docker()
    base = tmp_path_factory.mktemp("driver")
    (base / "cuda.c").write_text("int cuDriverGetVersion(int *v) { *v = 12090; return 0; }\n")
    driver = base / "lib"  # mktemp's own folder is 0700: dev could not read a mount of it
    driver.mkdir(mode=0o755)
    subprocess.run([require("gcc"), "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                    str(driver / "libcuda.so.1"), str(base / "cuda.c")], check=True)
    project = make_project(tmp_path_factory.mktemp("gpu-ssh") / "p", with_demo=False, with_gpu=True)
    project.doit("load:gpu-image")
    started = start_box("gpu-image:latest", "dream-test-gpu-ssh", key,
                        "-v", f"{driver}:/usr/local/nvidia/lib64:ro")
    probe = ("import ctypes; v = ctypes.c_int(); ctypes.CDLL('libcublas.so.12'); "
             "ctypes.CDLL('libcuda.so.1').cuDriverGetVersion(ctypes.byref(v)); print('cublas ok', v.value)")
    try:
        run = started.ssh(f'echo $CUDA_VERSION; python3 -c "{probe}"')
        assert run.returncode == 0, run.stderr
        version, loaded = run.stdout.splitlines()
        assert version.startswith("12.9.") and loaded == "cublas ok 12090"
    finally:
        subprocess.run(["docker", "rm", "-f", started.name], capture_output=True)
