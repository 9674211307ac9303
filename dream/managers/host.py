"""dream's supervisor on this host: ``doit run:procfile`` runs a deployment here, and
``doit render:procfile`` writes its rendered files under ``build/<deployment>/<renderer>/``.

This is the I/O half of rendering and running: it reads the env files a plan names (a renderer
does no I/O, dream/renderers/base.py), writes the rendered files atomically, and runs the
supervisor in the foreground with the plan under ``.dream/run/<deployment>/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dream.errors import DreamError
from dream.managers.base import Manager
from dream.recipe.model import Deployment
from dream.renderers.base import File, Plan, Renderer, Target
from dream.services.plan import build_plan, plan_json
from dream.supervisor.dotenv import EnvFileError, read_env_file
from dream.supervisor.plan import plan_from_json
from dream.supervisor.supervisor import Supervisor

RENDER_DIR = "build"


def read_env_files(plan: Plan, root: Path) -> dict[str, dict[str, str]]:
    """The variables of every env file the plan's services name, by that name, read from
    ``root`` in service order; an unreadable or malformed one is ``service X: …`` (the first
    service that names it)."""
    read: dict[str, dict[str, str]] = {}
    for service in plan["services"]:
        for name in service["env_files"]:
            if name in read:
                continue
            try:
                read[name] = read_env_file(root / name)
            except EnvFileError as exc:
                raise DreamError(f"service {service['name']}: {exc}") from None
    return read


def write_files(out: Path, files: list[File]) -> None:
    """Write each file under ``out`` through a temporary name and a rename, so a reader never
    sees half a file; ``config/`` is emptied first (a config file the deployment dropped goes)."""
    if (out / "config").exists():
        shutil.rmtree(out / "config")
    for file in files:
        path = out / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(file.content)
        os.chmod(temporary, file.mode)
        os.replace(temporary, path)


def render(deployment: Deployment, root: Path, renderer: Renderer) -> Path:
    """Render ``deployment`` for running from ``root`` into ``build/<deployment>/<renderer>/``
    (plus the plan as ``plan.json``); the folder."""
    out = root / RENDER_DIR / deployment.name / renderer.name
    plan = build_plan(deployment)
    files = renderer.render(plan, Target(root=root, out=out, env_files=read_env_files(plan, root)))
    write_files(out, files)
    (out / "plan.json").write_text(plan_json(plan))
    return out


class HostManager:
    """dream's supervisor, here, in the foreground: it takes the plan itself (no renderer)."""

    name = "host"
    renders: str | None = None

    def up(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Write the plan under its ``runtime_dir`` and run the supervisor until it ends
        (Ctrl-C, or every service finished); its exit code."""
        state = root / plan["runtime_dir"]
        state.mkdir(parents=True, exist_ok=True)
        (state / "plan.json").write_text(plan_json(dict(plan)))
        return Supervisor(plan_from_json(dict(plan)), root).run()


def run(deployment: Deployment, root: Path) -> int:
    """Run ``deployment`` on this host under dream's supervisor (``doit run:procfile``)."""
    manager: Manager = HostManager()
    return manager.up(build_plan(deployment), None, root)
