"""What every per-service image and every orchestrator agree on: where a service's one-service
plan sits in its image, how its readiness probe is run from outside the supervisor, the
image's tag in the store, and the one-service plan itself.

A container engine runs each service of a deployment in a container of its own, with dream's
supervisor as PID 1 running a plan of that one service: the engine orders the containers
(``depends_on``), passes env files as environment and restarts a container per the restart
policy, so the plan leaves those to it. Replicas stay inside the container (the supervisor runs
them as on the host), and every process keeps the PORT it has on the host.
"""

from __future__ import annotations

from typing import Any

from dream.errors import DreamError
from dream.recipe.model import Deployment
from dream.services.healthcheck import probe_command
from dream.services.plan import build_plan

SERVICE_PLAN_DIR = "/etc/dream/services"


def service_plan_path(deployment: str, service: str) -> str:
    """The one-service plan's path inside the service's image."""
    return f"{SERVICE_PLAN_DIR}/{deployment}-{service}.json"


def probe_argv(deployment: str, service: str) -> list[str]:
    """The argv that runs the service's readiness probe once (a container healthcheck)."""
    return probe_command(service_plan_path(deployment, service))


def image_tag(deployment: str, service: str) -> str:
    """The per-service image's tag in the store."""
    return f"{deployment}-{service}"


def one_service_plan(deployment: Deployment, service: str) -> dict[str, Any]:
    """The in-image plan of ``deployment`` with only ``service``: no ``depends_on`` (the
    orchestrator orders the containers), no ``env_files`` (it passes them as environment, which
    the supervisor hands on), ``restart: no`` and not ``allowed_to_exit`` (the service's end
    ends the container; the engine restarts it per the policy). ``port_base`` moves by the
    service's place in the deployment, so PORT is the one it gets on the host."""
    names = list(deployment.services)
    if service not in names:
        raise DreamError(f"deployment {deployment.name} has no service {service!r} "
                         f"(it has {', '.join(names)})")
    plan = build_plan(deployment, in_image=True)
    index = names.index(service)
    chosen = dict(plan["services"][index], depends_on={}, env_files=[], restart="no", allowed_to_exit=False)
    return {**plan, "port_base": deployment.port_base + 100 * index, "services": [chosen]}
