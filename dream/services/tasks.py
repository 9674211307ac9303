"""The service tasks: ``render:procfile`` and ``run:procfile``, each for one deployment.

``-d NAME`` (``--deployment``) picks the deployment; without it, ``$DREAM_DEPLOYMENT``, else
the one deployment marked ``default: true``, else the project's only deployment.
(``run`` is a doit command, so ``run:procfile`` is a task whose basename holds the colon.)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from dream.errors import DreamError
from dream.recipe.model import Recipe
from dream.renderers import procfile
from dream.services.model import Deployment
from dream.services.plan import build_plan, plan_json
from dream.supervisor.plan import plan_from_json
from dream.supervisor.supervisor import Supervisor

RENDER_DIR = "build"
DEPLOYMENT_PARAM = {"name": "deployment", "short": "d", "long": "deployment", "default": "",
                    "help": "the deployment (default: $DREAM_DEPLOYMENT, the one marked default, "
                            "or the only one)"}


def all_deployments(recipes: list[Recipe]) -> dict[str, Deployment]:
    """Every deployment of the project by name; a name used by two recipes is an error."""
    found: dict[str, Deployment] = {}
    for recipe in recipes:
        for name, deployment in recipe.deployments.items():
            if name in found:
                raise DreamError(f"deployment {name!r} is defined by {found[name].recipe} and "
                                 f"{recipe.display}; rename one", deployment.location)
            found[name] = deployment
    return found


def pick(deployments: dict[str, Deployment], requested: str) -> Deployment:
    name = requested or os.environ.get("DREAM_DEPLOYMENT", "")
    names = ", ".join(sorted(deployments)) or "none"
    if name:
        if name not in deployments:
            raise DreamError(f"no deployment {name!r} (the project has {names})")
        return deployments[name]
    marked = [d for d in deployments.values() if d.default]
    if len(marked) > 1:
        raise DreamError("more than one deployment is marked default: "
                         + ", ".join(d.name for d in marked))
    if marked:
        return marked[0]
    if len(deployments) == 1:
        return next(iter(deployments.values()))
    raise DreamError(f"which deployment? the project has {names}; name one with -d NAME "
                     "or mark one `default: true`")


def render_procfile(deployment: Deployment, root: Path) -> Path:
    out = root / RENDER_DIR / deployment.name / "procfile"
    plan = build_plan(deployment)
    files = procfile.render(plan, root, out)
    if (out / "config").exists():
        shutil.rmtree(out / "config")
    for relative, (text, mode) in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    (out / "plan.json").write_text(plan_json(plan))
    return out


def run_procfile(deployment: Deployment, root: Path) -> int:
    plan = build_plan(deployment)
    state = root / plan["runtime_dir"]
    state.mkdir(parents=True, exist_ok=True)
    (state / "plan.json").write_text(plan_json(plan))
    return Supervisor(plan_from_json(plan), root).run()


def service_tasks(recipes: list[Recipe], root: Path) -> dict[str, Any]:
    deployments = all_deployments(recipes)

    def render(deployment: str) -> None | TaskFailed:
        try:
            chosen = pick(deployments, deployment)
            out = render_procfile(chosen, root)
            print(f"{chosen.name}: wrote {os.path.relpath(out / 'Procfile', root)} and .env")
            return None
        except DreamError as exc:
            return TaskFailed(str(exc))

    def run(deployment: str) -> None | TaskFailed:
        try:
            chosen = pick(deployments, deployment)
        except DreamError as exc:
            return TaskFailed(str(exc))
        sys.stdout.flush()
        code = run_procfile(chosen, root)
        return None if code == 0 else TaskFailed(f"deployment {chosen.name}: supervisor exit code {code}")

    def task_render() -> Any:
        """render services to files under build/"""
        yield {"name": "procfile", "doc": "write build/<deployment>/procfile/{Procfile,.env}",
               "actions": [render], "params": [DEPLOYMENT_PARAM], "verbosity": 2, "uptodate": [False]}

    def task_run_procfile() -> Any:
        """run a deployment's services here, under dream's supervisor"""
        return {"basename": "run:procfile", "actions": [run], "params": [DEPLOYMENT_PARAM],
                "verbosity": 2, "uptodate": [False],
                "doc": "run a deployment (-d NAME) under dream's supervisor until Ctrl-C"}

    return {"task_render": task_render, "task_run_procfile": task_run_procfile}
