"""The service tasks: ``render:procfile`` and ``run:procfile``, each for one deployment.

Wiring only: a task picks the deployment, then a renderer (dream/renderers/, through
dream/managers/host.py, which reads and writes the files) or a manager (dream/managers/) does
the work.

``-d NAME`` (``--deployment``) picks the deployment; without it, ``$DREAM_DEPLOYMENT``, else
the one deployment marked ``default: true``, else the project's only deployment.
(``run`` is a doit command, so ``run:procfile`` is a task whose basename holds the colon.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from dream.errors import DreamError
from dream.recipe.model import Deployment, Recipe

# dream.managers.host (the supervisor, the renderers) is imported by the actions only: every
# doit command imports this module, and a `doit build` renders and runs nothing.


def __getattr__(name: str) -> Any:
    if name == "RENDER_DIR":
        from dream.managers import host
        return host.RENDER_DIR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    """``build/<deployment>/procfile/``, written; the folder."""
    from dream.managers import host
    from dream.renderers import RENDERERS
    return host.render(deployment, root, RENDERERS["procfile"])


def run_procfile(deployment: Deployment, root: Path) -> int:
    """The deployment under dream's supervisor here, until it ends; its exit code."""
    from dream.managers import host
    return host.run(deployment, root)


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
