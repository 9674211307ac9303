"""A deployment → the plan the supervisor runs (``dream/supervisor/plan.py`` reads it).

The same plan serves the host (`doit run:procfile`: paths relative to the project, runtime
files under ``.dream/run/<deployment>``) and an image (root ``/``, runtime files under
``/run/dream/<deployment>``); only ``runtime_dir`` differs.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from dream.recipe.model import Deployment
from dream.supervisor.plan import PLAN_VERSION
from dream.supervisor.secrets import IMAGE_SECRETS_DIR

HOST_RUNTIME = ".dream/run"
IMAGE_RUNTIME = "/run/dream"


def argv_of(command: str | list[str], args: list[str]) -> list[str]:
    """A list command is the argv; a string runs under ``/bin/sh -c`` with ``args`` quoted onto it."""
    if isinstance(command, list):
        return list(command) + list(args)
    return ["/bin/sh", "-c", " ".join([command.rstrip("\n")] + ([shlex.join(args)] if args else []))]


def _probe(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    timing = {key: spec[key] for key in ("initial_delay", "period", "timeout", "success_threshold",
                                         "failure_threshold")}
    if "exec" in spec:
        return {"kind": "exec", "argv": argv_of(spec["exec"], []), **timing}
    kind = "http" if "http" in spec else "tcp"
    return {"kind": kind, **spec[kind], **timing}


def service_plan(name: str, spec: dict[str, Any], user: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "argv": argv_of(spec["command"], spec["args"]),
        "pre_start": argv_of(spec["pre_start"], []) if spec.get("pre_start") is not None else None,
        "env": spec["env"],
        "env_files": spec["env_files"],
        "working_dir": spec.get("working_dir"),
        "user": spec.get("user", user),
        "volumes": spec["volumes"],
        "ports": spec["ports"],  # for renderers (the supervisor reads PORT, not these)
        "config_files": [{"path": c["path"], "content": c["content"], "mode": c["mode"]}
                         for c in spec["config_files"]],
        "depends_on": spec["depends_on"],
        "readiness": _probe(spec.get("readiness")),
        "liveness": _probe(spec.get("liveness")),
        **{key: spec[key] for key in ("restart", "max_restarts", "backoff", "max_backoff", "stop_signal",
                                      "stop_grace_period", "oneshot", "replicas", "allowed_to_exit")},
        "log_file": spec.get("log_file"),
        "gpus": spec.get("gpus"),
        "secrets": [{key: secret.get(key) for key in ("name", "ciphertext", "path", "env", "mode")}
                    for secret in spec.get("secrets", [])],
    }


def build_plan(deployment: Deployment, in_image: bool = False) -> dict[str, Any]:
    runtime = IMAGE_RUNTIME if in_image else HOST_RUNTIME
    return {
        "version": PLAN_VERSION,
        "name": deployment.name,
        "env": deployment.env,
        "port_base": deployment.port_base,
        "log_dir": deployment.log_dir,
        "runtime_dir": f"{runtime}/{deployment.name}",
        "secrets_dir": IMAGE_SECRETS_DIR if in_image else None,  # None: a private folder of the run's
        "services": [service_plan(name, spec, deployment.user) for name, spec in deployment.services.items()],
    }


def plan_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=1, sort_keys=True) + "\n"
