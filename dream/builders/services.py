"""`services` layers: dream's supervisor and one deployment's plan, so that ``docker run
<image>`` starts the deployment with the supervisor as PID 1 (nix2gpu's in-container services).

The supervisor package goes where dream/services/supervisor_files.py says; the plan to
``/etc/dream/deployments/<name>.json``. The layer sets the image's ``cmd`` to
``python3 -m dream_supervisor <plan>`` (replacing any other), so ``docker run <image> bash``
still gives a shell, exposes the services' ports, and carries Docker's ``Healthcheck`` from the
deployment's readiness probes (``python3 -m dream_supervisor probe <plan>``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Mapping

from dream.builders.base import BuildContext, LayerBuilder
from dream.errors import DreamError
from dream.oci.tree import Tree
from dream.python.bytecode import add_bytecode, compiler_key, tree_modules
from dream.python.target import PythonTarget
from dream.recipe.model import Deployment, LayerSpec
from dream.services.healthcheck import deployment_healthcheck
from dream.services.plan import build_plan, plan_json
from dream.services.supervisor_files import PACKAGE_DIR, PACKAGE_PARENTS, supervisor_sources

PLAN_DIR = "/etc/dream/deployments"


def chosen_deployment(ctx: BuildContext) -> Deployment:
    wanted = ctx.layer.spec.get("deployment")
    deployments = ctx.recipe.deployments
    if wanted is None:
        wanted = next((d.name for d in deployments.values() if d.default), next(iter(deployments)))
    return deployments[wanted]


class ServicesBuilder(LayerBuilder):
    kind = "services"
    version = "1"
    needs_lock = False

    def _plan(self, ctx: BuildContext) -> tuple[str, str]:
        deployment = chosen_deployment(ctx)
        return deployment.name, plan_json(build_plan(deployment, in_image=True))

    def key_inputs(self, ctx: BuildContext) -> Any:
        ctx.lock  # noqa: B018  # its (empty) entry, read through dream.lock, runs `check_lock` first
        name, plan = self._plan(ctx)
        sources = {file: hashlib.sha256(data).hexdigest() for file, data in supervisor_sources().items()}
        return {"deployment": name, "plan": hashlib.sha256(plan.encode()).hexdigest(), "supervisor": sources,
                "bytecode": compiler_key(PythonTarget.of(ctx.recipe).version)}

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        """The supervisor's package with its bytecode, for the recipe's Python version (the
        image's ``python3`` runs it as PID 1 at every container start), and the plan."""
        name, plan = self._plan(ctx)
        tree = Tree(f"{ctx.recipe.name}/{ctx.layer.name}")
        for directory in (*PACKAGE_PARENTS, PACKAGE_DIR, "/etc/dream", PLAN_DIR):
            tree.add_dir(directory, 0o755, 0, 0)
        for file, data in supervisor_sources().items():
            tree.add_bytes(f"{PACKAGE_DIR}/{file}", data, 0o644, 0, 0)
        version = PythonTarget.of(ctx.recipe).version
        add_bytecode(tree, tree_modules(tree, (PACKAGE_DIR,), scratch), version, scratch, tree.label)
        tree.add_bytes(f"{PLAN_DIR}/{name}.json", plan.encode(), 0o644, 0, 0)
        return tree

    def config(self, ctx: BuildContext) -> dict[str, Any]:
        """The supervisor as ``cmd``, the services' ports, the deployment's label, and a Docker
        ``healthcheck`` from the readiness probes (dream/services/healthcheck.py), when any."""
        deployment = chosen_deployment(ctx)
        plan = f"{PLAN_DIR}/{deployment.name}.json"
        ports = sorted({f"{port}/tcp" for spec in deployment.services.values() for port in spec["ports"]})
        config: dict[str, Any] = {"cmd": ["python3", "-m", "dream_supervisor", plan],
                                  "ports": ports, "labels": {"dev.dream.deployment": deployment.name}}
        check = deployment_healthcheck(plan, build_plan(deployment, in_image=True)["services"])
        if check is not None:
            config["healthcheck"] = check
        return config

    def check_lock(self, layer: LayerSpec, entries: Mapping[str, Any]) -> None:
        """The supervisor needs ``python3`` in the image. Raises `DreamError` (at the layer's
        recipe line) when the lock has Debian entries and none of them installs ``python3`` or
        ``python3.N``; a lock without Debian entries (a ``from`` base) is not checked."""
        debian = [entry for entry in entries.values() if entry.get("kind") == "debian"]
        if debian and not any(re.fullmatch(r"python3(\.\d+)?", p["name"]) for e in debian for p in e["packages"]):
            raise DreamError("the supervisor needs python3: add it to a Debian layer's packages "
                             "(e.g. import debian-python)", layer.location, f"layers.{layer.name}")
