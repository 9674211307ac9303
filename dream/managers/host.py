"""dream's supervisor on this host: ``doit run:procfile`` runs a deployment here, and
``doit render:<renderer>`` (procfile, compose, a plugin's) writes its rendered files under
``build/<deployment>/<renderer>/``.

This is the I/O half of rendering and running: it reads the env files a plan names (a renderer
does no I/O, dream/renderers/base.py), writes the rendered files atomically, and runs the
supervisor in the foreground with the plan under ``.dream/run/<deployment>/``.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dream.errors import DreamError
from dream.managers.base import Manager
from dream.managers.images import service_references
from dream.recipe.model import Deployment
from dream.renderers.base import File, Plan, Renderer, Target
from dream.services.plan import build_plan, plan_json
from dream.supervisor.dotenv import EnvFileError, read_env_file
from dream.supervisor.plan import plan_from_json
from dream.supervisor.supervisor import Supervisor

if TYPE_CHECKING:
    from dream.store import Store

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


def rendered(deployment: Deployment, root: Path, renderer: Renderer, name: str = "",
             store: Store | None = None, options: Mapping[str, Any] | None = None) -> tuple[Path, list[File]]:
    """What rendering ``deployment`` for running from ``root`` writes, and where: the renderer's
    files plus the plan as ``plan.json``, for ``build/<deployment>/<name>/`` (``name``: the
    renderer's, unless a plugin was declared under another, or a manager renders for itself:
    ``podman-kube``). Every renderer gets the same `Target`: the env files' variables, each
    service's image reference and the deployment's settings for it (``compose: {...}``, or
    ``options`` when given); with ``store``, an image pushed is named by digest."""
    name = name or renderer.name
    out = root / RENDER_DIR / deployment.name / name
    plan = build_plan(deployment)
    settings = deployment.options.get(name, {}) if options is None else options
    target = Target(root=root, out=out, env_files=read_env_files(plan, root),
                    images=service_references(deployment, store), options=settings)
    return out, [*renderer.render(plan, target), File("plan.json", plan_json(plan))]


def render(deployment: Deployment, root: Path, renderer: Renderer, name: str = "") -> Path:
    """Render ``deployment`` (see `rendered`) and write the files; the folder."""
    out, files = rendered(deployment, root, renderer, name)
    write_files(out, files)
    return out


def written(out: Path, files: list[File]) -> bool:
    """Whether ``out`` holds exactly what `write_files` would leave there: each file with its
    text and mode, and nothing else in ``config/`` (which a write empties first)."""
    for file in files:
        path = out / file.path
        try:
            with open(path, newline="") as stream:  # the bytes as written: no newline translation
                if stream.read() != file.content:
                    return False
            if stat.S_IMODE(path.stat().st_mode) != file.mode:
                return False
        except (OSError, ValueError):  # absent, unreadable, not text
            return False
    config = out / "config"
    present = {path.relative_to(out).as_posix() for path in config.rglob("*") if not path.is_dir()}
    return present <= {file.path for file in files}


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

    def down(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Nothing: the supervisor stops every service before ``up`` returns."""
        return 0


def run(deployment: Deployment, root: Path) -> int:
    """Run ``deployment`` on this host under dream's supervisor (``doit run:procfile``)."""
    manager: Manager = HostManager()
    return manager.up(build_plan(deployment), None, root)
