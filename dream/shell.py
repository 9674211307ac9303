"""``doit shell:<image>``: a shell in the built image, on the current directory (nix2gpu's
``shell``).

``docker run --rm -i`` (``-t`` on a terminal) of the exact image the store built (by its id, the
config digest), with the current directory at ``/workspace`` as the working directory, as the
image's user, and ``--gpus all`` when the engine has the NVIDIA runtime. The user is the one the
image is made for: its ``home`` layer's user (gpu-image's ``dev``, though its config user is
root for the supervisor), else the config's ``User``. The shell is ``bash`` (interactive, so
~/.bashrc brings the home's environment), behind the image's dream-cuda-env entrypoint when it
has one (the driver fix-up); any other entrypoint (``python3``) is bypassed. ``--cmd 'CMD'``
runs CMD instead of an interactive shell and fails the task when CMD fails.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doit.exceptions import TaskFailed

from dream.builders.cuda import ENV_SCRIPT
from dream.builders.home import ENV_FILE
from dream.errors import DreamError
from dream.store import open_store

if TYPE_CHECKING:
    from dream.tasks import ImageJob

WORKSPACE = "/workspace"


def has_nvidia_runtime() -> bool:
    """Whether `docker info` lists the NVIDIA runtime (what ``--gpus all`` needs)."""
    try:
        run = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DreamError(f"cannot ask the Docker engine (docker info): {exc}") from None
    if run.returncode != 0:
        raise DreamError("the Docker engine does not answer (docker info: "
                         f"{run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode})")
    return "nvidia" in run.stdout


def shell_user(image: ImageJob, config: dict[str, Any]) -> tuple[str, str | None]:
    """The user to be, and the file with its environment if it is a ``home`` layer's user."""
    homes = [layer.spec for layer in image.recipe.layers if layer.kind == "home"]
    if homes:
        return homes[-1]["user"], posixpath.join(homes[-1]["home"], ENV_FILE)
    return config.get("User") or "root", None


def shell_argv(image_id: str, config: dict[str, Any], user: str, cwd: Path, cmd: str,
               network: str, gpus: bool, tty: bool, env_file: str | None = None) -> list[str]:
    """The ``docker run`` command line (pure: tests check it without an engine). A ``--cmd``
    runs in a non-interactive bash, which reads no ~/.bashrc: BASH_ENV gives it the user's
    environment all the same."""
    argv = ["docker", "run", "--rm", "-i", *(["-t"] if tty else []), *(["--gpus", "all"] if gpus else []),
            *(["--network", network] if network else []),
            *(["-e", f"BASH_ENV={env_file}"] if env_file and cmd else []),
            "-v", f"{cwd}:{WORKSPACE}", "-w", WORKSPACE, "--user", user]
    shell = ["bash", *(["-c", cmd] if cmd else [])]
    if config.get("Entrypoint") == [ENV_SCRIPT]:
        return [*argv, "--entrypoint", ENV_SCRIPT, image_id, *shell]
    return [*argv, "--entrypoint", shell[0], image_id, *shell[1:]]


def open_shell(image: ImageJob, cmd: str, network: str) -> None | TaskFailed:
    """The shell task's action."""
    try:
        store = open_store()
        manifest = image.tagged(store)
        config_digest = store.read_json(manifest.digest)["config"]["digest"]
        config = store.read_json(config_digest).get("config", {})
        user, env_file = shell_user(image, config)
        argv = shell_argv(config_digest, config, user, Path.cwd(), cmd, network, has_nvidia_runtime(),
                          sys.stdin.isatty() and sys.stdout.isatty() and not cmd, env_file)
    except DreamError as exc:
        return TaskFailed(str(exc))
    sys.stdout.flush()
    code = subprocess.run(argv, env=os.environ).returncode
    if cmd and code != 0:
        return TaskFailed(f"shell:{image.recipe.name}: the command exited with code {code}")
    return None


def shell_task(image: ImageJob) -> dict[str, Any]:
    name = image.recipe.name
    return {"name": name, "doc": f"a shell in {name} on the current directory (/workspace)",
            "actions": [(open_shell, [image])], "task_dep": [f"load:{name}"], "verbosity": 2,
            "uptodate": [False],
            "params": [{"name": "cmd", "long": "cmd", "type": str, "default": "",
                        "help": "run this bash command instead of an interactive shell"},
                       {"name": "network", "long": "network", "type": str, "default": "",
                        "help": "docker run --network (default: the engine's)"}]}
