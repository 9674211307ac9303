"""Render a deployment as a Docker Compose file: one container per service, each running that
service's per-service image (dream's supervisor as PID 1 with a one-service plan).

Inside a container the supervisor gives the service what it gets on the host — command, env,
user, working directory, config files, volumes made and wiped, liveness, replicas — so this file
holds only what is between containers: images, the network, env files, named volumes, start
order with conditions, the healthcheck from readiness, the engine's restart policy, the stop
signal and grace, GPUs and labels. What Compose cannot say of the model is listed, one item a
line, in the file's header (docs/renderers.md has the whole table).

Pure (dream/renderers/base.py): the images come in ``target.images``, the settings of the
deployment's ``compose:`` mapping in ``target.options``.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Mapping

import yaml

from dream.errors import DreamError
from dream.renderers.base import File, Plan, Target
from dream.services.per_service import probe_argv
from dream.supervisor.secrets import IDENTITY_ENV, IDENTITY_FILE_ENV, IDENTITY_SECRET, MOUNTED_IDENTITY

CONDITIONS = {"started": "service_started", "healthy": "service_healthy",
              "completed_successfully": "service_completed_successfully"}
SUPERVISOR_STOP = 2.0  # the supervisor's own time after the service's grace: it stops, then exits
ENGINE_LEAST = 0.001  # the engine refuses a healthcheck interval or timeout below 1 ms (0: its default, 30 s)
VOLUME_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")
NETWORKS = ("host", "bridge")
UNITS = (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000), ("us", 1))


def duration(seconds: float) -> str:
    """Seconds as a duration both Go's ``time.ParseDuration`` and docker-compose 1.29 read:
    ``0.2`` → ``200ms``, ``90`` → ``1m30s`` (whole microseconds, the finest a plan needs)."""
    left = round(seconds * 1_000_000)
    parts = []
    for unit, size in UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def literal(text: str) -> str:
    """Compose interpolates ``${VAR}`` in every value; ``$$`` is a literal ``$``."""
    return text.replace("$", "$$")


def volume_name(path: str) -> str:
    """The named volume that holds a volume path: ``var/lib/db`` → ``vol-var-lib-db``."""
    return "vol-" + posixpath.normpath(path).replace("/", "-")


def restart_policy(service: Mapping[str, Any]) -> str:
    """The engine's restart policy: a oneshot is never restarted by the engine (it must finish)."""
    if service["oneshot"] or service["restart"] == "no":
        return "no"
    if service["restart"] == "on-failure":
        return f"on-failure:{service['max_restarts']}" if service["max_restarts"] else "on-failure"
    return "always"


def healthcheck(deployment: str, service: Mapping[str, Any]) -> dict[str, Any]:
    """The readiness probe as the image's Healthcheck says it, run by the supervisor's ``probe``."""
    probe = service["readiness"]
    return {"test": ["CMD", *probe_argv(deployment, service["name"])],
            "interval": duration(max(probe["period"], ENGINE_LEAST)),
            "timeout": duration(max(probe["timeout"], ENGINE_LEAST)),
            "start_period": duration(probe["initial_delay"]),
            "retries": probe["failure_threshold"]}


def gpu_devices(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """N GPUs per replica: the container holds every replica, so it reserves N × replicas."""
    gpus = service["gpus"]
    count = "all" if gpus == "all" else gpus * service["replicas"]
    return [{"driver": "nvidia", "count": count, "capabilities": ["gpu"]}]


def published(address: str, port: int) -> str:
    """``"<address>:<port>:<port>"``; an IPv6 address in brackets, as Compose reads it."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}:{port}"


def _volumes(plan: Plan) -> dict[str, dict[str, list[str]]]:
    """Every volume path of the deployment → its named volume, with who mounts and who wipes it."""
    volumes: dict[str, dict[str, list[str]]] = {}
    paths: dict[str, str] = {}
    for service in plan["services"]:
        for volume in service["volumes"]:
            path = posixpath.normpath(volume["path"])
            if not VOLUME_PATH.match(path):
                raise DreamError(f"service {service['name']}: volume {volume['path']!r} cannot name a "
                                 "Compose volume (letters, digits, `.`, `_`, `-` and `/` only)")
            name = volume_name(path)
            if paths.setdefault(name, path) != path:
                raise DreamError(f"volumes {paths[name]!r} and {path!r} would both be the Compose "
                                 f"volume {name}; rename one")
            entry = volumes.setdefault(name, {"mounted": [], "wiped": []})
            entry["mounted"].append(service["name"])
            if not volume["persistent"]:
                entry["wiped"].append(service["name"])
    return volumes


def _notes(plan: Plan, volumes: Mapping[str, Mapping[str, list[str]]], network: str) -> list[str]:
    """What this deployment means that its compose.yaml cannot say, one line each."""
    services = plan["services"]
    notes = ["a service that ends (or a oneshot that fails) leaves the other containers running; "
             "dream stops the whole deployment unless the service is allowed_to_exit"]
    if any(restart_policy(s) != "no" for s in services):
        notes.append("restart delays and counts are the engine's (from 100ms doubling to 1m, again from "
                     "100ms after a 10s run; the count never starts again), not backoff/max_backoff")
    if any(s["readiness"] for s in services):
        notes.append("healthchecks go on after the first pass (dream stops probing then); a later "
                     "failure only marks the container unhealthy")
    if any(s["env_files"] for s in services):
        notes.append("env files are read by Compose's own dotenv reader (it may expand ${VAR} and "
                     "quotes otherwise than dream's), and rank below the deployment's env and PORT "
                     "(dream ranks them above)")
    if network == "bridge":
        notes.append("bridge network: services reach each other by service name, not 127.0.0.1; only "
                     "declared ports are published, not each instance's PORT")
    for name, entry in volumes.items():
        if entry["wiped"]:
            notes.append(f"{name}: wiped as each container that wipes it starts ({', '.join(entry['wiped'])}), "
                         "engine restarts included, not once per deployment start")
    for service in services:
        name, probe = service["name"], service["readiness"]
        if service["oneshot"] and service["restart"] != "no":
            notes.append(f"{name}: a oneshot is not restarted by the engine (restart {service['restart']} dropped)")
        if service["restart"] == "always" and service["max_restarts"]:
            notes.append(f"{name}: restart always has no limit in the engine (max_restarts "
                         f"{service['max_restarts']} dropped)")
        if probe and probe["initial_delay"] > 0:
            notes.append(f"{name}: initial_delay is the healthcheck's start_period: failures in it do not "
                         "count, but a pass in it does (dream does not probe before it)")
        if probe and probe["success_threshold"] > 1:
            notes.append(f"{name}: healthy after one passing healthcheck (success_threshold "
                         f"{probe['success_threshold']} dropped)")
        if probe and min(probe["period"], probe["timeout"]) < ENGINE_LEAST:
            notes.append(f"{name}: a readiness period or timeout under 1ms is 1ms (the engine's least)")
        if service["replicas"] > 1:
            notes.append(f"{name}: its {service['replicas']} replicas run in one container (one "
                         "healthcheck, one restart policy for all)")
        if service["log_file"]:
            notes.append(f"{name}: log_file {service['log_file']} is written inside its container "
                         "(kept only below a volume); `docker-compose logs` has the output")
    if plan["log_dir"]:
        notes.append(f"log_dir {plan['log_dir']} is written inside each container (kept only below a volume)")
    if any(s.get("secrets") for s in services):
        notes.append(f"secrets are decrypted in each container by its supervisor with the identity in "
                     f"{IDENTITY_ENV} (passed through) or the file {IDENTITY_FILE_ENV} names (a Compose secret "
                     f"at {MOUNTED_IDENTITY}); file secrets land in the container's /run/secrets, on its "
                     "writable layer unless /run is a tmpfs")
    return notes


def _service(plan: Plan, service: Mapping[str, Any], target: Target, network: str, address: str) -> dict[str, Any]:
    name = service["name"]
    if name not in target.images:
        raise DreamError(f"service {name}: no image to run it; run `doit render:images -d {plan['name']}` "
                         "(and load it) first")
    out: dict[str, Any] = {"image": target.images[name]}
    if network == "host":
        out["network_mode"] = "host"
    else:
        out["networks"] = ["default"]
        if service["ports"]:
            out["ports"] = [published(address, port) for port in service["ports"]]
    if service["env_files"]:
        out["env_file"] = [literal(str(target.root / path)) for path in service["env_files"]]
    if service["volumes"]:
        out["volumes"] = [f"{volume_name(v['path'])}:/{posixpath.normpath(v['path'])}" for v in service["volumes"]]
    if service["depends_on"]:
        out["depends_on"] = {dep: {"condition": CONDITIONS[cond]} for dep, cond in service["depends_on"].items()}
    if service["readiness"]:
        out["healthcheck"] = healthcheck(plan["name"], service)
    out["restart"] = restart_policy(service)
    out["stop_signal"] = "SIGTERM"
    out["stop_grace_period"] = duration(service["stop_grace_period"] + SUPERVISOR_STOP)
    if service["gpus"] is not None:
        out["deploy"] = {"resources": {"reservations": {"devices": gpu_devices(service)}}}
    if service.get("secrets"):
        # The supervisor in the container decrypts them; the operator's identity comes in as the
        # variable, passed through by name, or as a Compose secret at its mounted path.
        out["environment"] = [IDENTITY_ENV]
        out["secrets"] = [{"source": IDENTITY_SECRET, "target": IDENTITY_SECRET}]
    out["labels"] = {"dev.dream.deployment": plan["name"], "dev.dream.service": name}
    return out


class ComposeRenderer:
    """``build/<deployment>/compose/compose.yaml``."""

    name = "compose"

    def render(self, plan: Plan, target: Target) -> list[File]:
        return render(plan, target)


def render(plan: Plan, target: Target) -> list[File]:
    """One file, ``compose.yaml``: the header comment, then services, volumes."""
    network = target.options.get("network", "host")
    address = target.options.get("publish_address", "127.0.0.1")
    if network not in NETWORKS:
        raise DreamError(f"compose network {network!r}: choose one of {', '.join(NETWORKS)}")
    volumes = _volumes(plan)
    document: dict[str, Any] = {
        "services": {s["name"]: _service(plan, s, target, network, address) for s in plan["services"]}}
    if volumes:
        document["volumes"] = {name: {} for name in volumes}
    if any(service.get("secrets") for service in plan["services"]):
        document["secrets"] = {IDENTITY_SECRET: {"file": f"${{{IDENTITY_FILE_ENV}:-/dev/null}}"}}
    out = target.out / "compose.yaml"
    header = [f"# Deployment {plan['name']}, rendered by dream (`doit render:compose`); do not edit.",
              f"# Run: doit run:compose -d {plan['name']}   (or, once `doit load:{plan['name']}-<service>` loaded "
              "every service's image:",
              f"#      docker-compose -p {plan['name']} -f {out} up)",
              "# Each container runs dream's supervisor with its service's plan (command, env, user,",
              "# working_dir, config files, volumes, liveness, replicas). What Compose cannot express:"]
    header += [f"# - {note}" for note in _notes(plan, volumes, network)]
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10_000)
    return [File("compose.yaml", "\n".join(header) + "\n" + body)]
