"""Render a deployment as Kubernetes manifests: one pod per service, each running that service's
per-service image (dream's supervisor as PID 1 with a one-service plan), as Compose does.

Inside a container the supervisor gives the service what it gets on the host — command, env,
user, working directory, config files, volumes made and wiped, liveness, replicas — so the
manifests set no command, args, env, workingDir or runAsUser (they would override the
supervisor): they hold what is between containers. Each service is a Deployment (``replicas:
1``: its replicas run inside the one container), a oneshot a Job; declared ports make a
Service; env files are ConfigMaps (``envFrom``), persistent volumes PersistentVolumeClaims and
the others emptyDirs; readiness and liveness become the kubelet's probes. Kubernetes has no
start order, so a ``healthy`` dependency is waited for by an init container that runs the
dependency's own probe. What Kubernetes cannot say of the model is listed, one item a line, in
the header of ``<deployment>.yaml`` (docs/renderers.md has the whole table).

Why one multi-document file: ``podman kube play`` and ``kubectl apply -f`` read it as it is,
``kustomization.yaml`` next to it lets ``kubectl apply -k`` build it (and set the namespace),
and a change of the deployment diffs as one file.

The kubelet expands ``$(VAR)`` (and ``$$`` to ``$``) in exec probe commands: a ``$`` before
``(`` or ``$`` is doubled (`literal`), so the argv runs as written.

Pure (dream/renderers/base.py): the images come in ``target.images`` (``repo@sha256:…`` once
pushed), the env files' variables in ``target.env_files``, the settings of the deployment's
``kubernetes:`` mapping in ``target.options``.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from typing import Any, Mapping

import yaml

from dream.errors import DreamError
from dream.renderers.base import File, Plan, Target
from dream.renderers.compose import SUPERVISOR_STOP, volume_name
from dream.services.per_service import image_tag, probe_argv, service_plan_path
from dream.supervisor.secrets import IDENTITY_FILE_ENV, IDENTITY_SECRET

NETWORKS = ("host", "cluster")
IMAGES = ("pushed", "local")
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label, at most 63 (checked apart)
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
GPU = "nvidia.com/gpu"
IDENTITY_MOUNT = "/run/dream/age-identity"  # the age identity Secret, in containers with secrets
KINDS = ("deployment", "job", "service", "configmap")  # what is rendered, claims aside (they hold the data)
JOB_BACKOFF_LIMIT = 6  # Kubernetes' own default
LEAST_GATE_SLEEP = 0.1
NAME, PART_OF, MANAGED_BY = "app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"

# A gate of the cluster network: retry until the dependency's Service answers (a status below 400
# for http; https certificates are not checked, as the kubelet's probe does not). A gate is its
# container's PID 1, which the kernel spares every signal it has no handler for: each gate ends
# on SIGTERM by itself, or the pod it holds would take its whole grace period to stop.
GATE_STOPS = "trap 'exit 143' TERM; "
TCP_GATE = """\
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
while True:
    try:
        socket.create_connection(({host!r}, {port}), {timeout}).close()
        break
    except OSError as exc:
        print("waiting for {host}:{port}:", exc, flush=True)
        time.sleep({sleep})
"""
HTTP_GATE = """\
import signal, ssl, sys, time, urllib.request
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
context = ssl._create_unverified_context()
while True:
    try:
        urllib.request.urlopen({url!r}, timeout={timeout}, context=context).close()
        break
    except Exception as exc:
        print("waiting for {url}:", exc, flush=True)
        time.sleep({sleep})
"""


def seconds(value: float) -> str:
    """Seconds as short text: ``0.2`` → ``0.2``, ``10.0`` → ``10``."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def whole(value: float) -> int:
    """Up to whole seconds (what probe and grace fields take); 1e-6 of float noise is not a second."""
    return math.ceil(round(value, 6))


def literal(text: str) -> str:
    """The kubelet expands ``$(VAR)`` and ``$$`` in exec commands: a ``$`` before ``(`` or ``$``
    is doubled, every other character stays (so a plain ``${VAR}`` is unchanged)."""
    return re.sub(r"\$(?=[$(])", "$$", text)


def object_name(deployment: str, service: str) -> str:
    """``<deployment>-<service>``, ``_`` as ``-`` (not yet checked: `_label`)."""
    return f"{deployment}-{service}".replace("_", "-")


def env_slug(path: str) -> str:
    """An env file's path in a ConfigMap name: ``conf/Base.env`` → ``conf-base-env``."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _label(name: str, what: str) -> str:
    if len(name) > 63 or not LABEL.match(name):
        raise DreamError(f"{what}: Kubernetes name {name!r} is not a DNS-1123 label (at most 63 "
                         "lowercase letters, digits and `-`, starting and ending with a letter or digit)")
    return name


def selector(deployment: str) -> str:
    """The label selector of every object rendered for ``deployment`` (how they are deleted)."""
    return f"{PART_OF}={deployment},{MANAGED_BY}=dream"


def _labels(deployment: str, service: str | None = None) -> dict[str, str]:
    named = {NAME: service} if service is not None else {}
    return {**named, PART_OF: deployment, MANAGED_BY: "dream"}


def _metadata(name: str, labels: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if namespace:
        out["namespace"] = namespace
    out["labels"] = dict(labels)
    return out


class _Context:
    """What every object of one rendering shares: the plan, the settings, the names."""

    def __init__(self, plan: Plan, target: Target) -> None:
        options = target.options
        self.plan, self.target = plan, target
        self.deployment: str = plan["name"]
        self.prefix = self.deployment.replace("_", "-")
        self.network: str = options.get("network") or "host"
        self.images: str = options.get("images") or "pushed"
        self.namespace: str | None = options.get("namespace") or None
        self.storage: str = options.get("storage") or "1Gi"
        self.storage_class: str | None = options.get("storage_class") or None
        self.runtime_class: str | None = options.get("runtime_class") or None
        self.age_identity: str = options.get("age_identity_secret") or IDENTITY_SECRET
        if self.network not in NETWORKS:
            raise DreamError(f"kubernetes network {self.network!r}: choose one of {', '.join(NETWORKS)}")
        if self.images not in IMAGES:
            raise DreamError(f"kubernetes images {self.images!r}: choose one of {', '.join(IMAGES)}")
        if self.namespace:
            _label(self.namespace, "kubernetes namespace")
        self.services = {s["name"]: s for s in plan["services"]}
        self.index = {s["name"]: i for i, s in enumerate(plan["services"])}
        self.names: dict[str, str] = {}
        owners: dict[str, str] = {}
        for name in self.services:
            full = _label(object_name(self.deployment, name), f"service {name}")
            if owners.setdefault(full, name) != name:
                raise DreamError(f"services {owners[full]} and {name} would both be the Kubernetes "
                                 f"object {full}; rename one")
            self.names[name] = full
        self.config_maps = self._config_maps()
        self.claims = self._claims()

    def port(self, service: str) -> int:
        """The PORT of the service's first replica."""
        return int(self.plan["port_base"]) + 100 * self.index[service]

    def image(self, service: str) -> tuple[str, str]:
        """The image and its ``imagePullPolicy``."""
        tag = image_tag(self.deployment, service)
        ref = self.target.images.get(service)
        if self.images == "local":
            if ref is None:
                raise DreamError(f"service {service}: no image to run it; run `doit render:images -d "
                                 f"{self.deployment}` first")
            return ref, "Never"
        if ref is None or "@sha256:" not in ref:
            raise DreamError(f"service {service}: image {tag} is not in a registry; run `doit push:{tag}` "
                             "(or set kubernetes: {images: local} to use local tags)")
        return ref, "IfNotPresent"

    def _config_maps(self) -> dict[str, str]:
        """Every env file of the deployment → its ConfigMap's name, in the order they are named."""
        maps: dict[str, str] = {}
        owners: dict[str, str] = {}
        for service in self.plan["services"]:
            for path in service["env_files"]:
                if path in maps:
                    continue
                name = _label(f"{self.prefix}-env-{env_slug(path)}", f"service {service['name']}: env file {path}")
                if owners.setdefault(name, path) != path:
                    raise DreamError(f"env files {owners[name]!r} and {path!r} would both be the ConfigMap "
                                     f"{name}; rename one")
                if path not in self.target.env_files:
                    raise DreamError(f"service {service['name']}: env file {path} was not read")
                for key in self.target.env_files[path]:
                    if not CONFIG_KEY.match(key):
                        raise DreamError(f"env file {path}: variable {key!r} cannot be a ConfigMap key "
                                         "(letters, digits, `-`, `_` and `.` only)")
                maps[path] = name
        return maps

    def _claims(self) -> dict[str, dict[str, list[str]]]:
        """Every volume name (``vol-…``) → the services that mount it persistent (a shared
        PersistentVolumeClaim) and those that mount it as an emptyDir of their own pod."""
        claims: dict[str, dict[str, list[str]]] = {}
        paths: dict[str, str] = {}
        for service in self.plan["services"]:
            for volume in service["volumes"]:
                path = posixpath.normpath(volume["path"])
                what = f"service {service['name']}: volume {volume['path']!r}"
                name = _label(volume_name(path), what)
                if volume["persistent"]:
                    _label(f"{self.prefix}-{name}", what)
                if paths.setdefault(name, path) != path:
                    raise DreamError(f"volumes {paths[name]!r} and {path!r} would both be the Kubernetes "
                                     f"volume {name}; rename one")
                entry = claims.setdefault(name, {"claimed": [], "empty": []})
                kind = "claimed" if volume["persistent"] else "empty"
                if service["name"] not in entry[kind]:
                    entry[kind].append(service["name"])
        return claims


def _gate_argv(dep: Mapping[str, Any], ctx: _Context) -> list[str]:
    """The init container's command that waits for ``dep`` to be ready."""
    probe = dep["readiness"]
    sleep = seconds(max(probe["period"], LEAST_GATE_SLEEP))
    if ctx.network == "host":
        plan = shlex.quote(service_plan_path(ctx.deployment, dep["name"]))
        return ["/bin/sh", "-c", f"{GATE_STOPS}until python3 -m dream_supervisor probe {plan}; do sleep {sleep}; done"]
    host, port = ctx.names[dep["name"]], probe.get("port") or ctx.port(dep["name"])
    timeout = seconds(max(probe["timeout"], LEAST_GATE_SLEEP))
    if probe["kind"] == "tcp":
        return ["python3", "-c", TCP_GATE.format(host=host, port=port, timeout=timeout, sleep=sleep)]
    url = f"{probe['scheme']}://{host}:{port}{probe['path']}"
    return ["python3", "-c", HTTP_GATE.format(url=url, timeout=timeout, sleep=sleep)]


def _gates(service: Mapping[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    """``wait-<dep>`` init containers, one per ``healthy`` dependency that has a readiness probe."""
    gates = []
    for dep_name, condition in service["depends_on"].items():
        dep = ctx.services[dep_name]
        probe = dep["readiness"]
        if condition != "healthy" or probe is None:
            continue
        if ctx.network == "cluster":
            if probe["kind"] == "exec":
                raise DreamError(f"service {service['name']}: depends on {dep_name} healthy, but its exec "
                                 "readiness cannot be probed from another pod in the cluster network; give "
                                 f"{dep_name} an http or tcp readiness, or use kubernetes: {{network: host}}")
            port = probe.get("port") or ctx.port(dep_name)
            if port not in dep["ports"]:
                raise DreamError(f"service {service['name']}: depends on {dep_name} healthy, but its readiness "
                                 f"port {port} is not one of its ports (its Service carries only those); "
                                 f"add {port} to {dep_name}'s ports")
        image, pull = ctx.image(dep_name)
        gate: dict[str, Any] = {"name": _label(f"wait-{dep_name}".replace("_", "-"), f"service {service['name']}"),
                                "image": image, "imagePullPolicy": pull, "command": _gate_argv(dep, ctx)}
        if dep["env_files"]:
            gate["envFrom"] = [{"configMapRef": {"name": ctx.config_maps[path]}} for path in dep["env_files"]]
        mounts = _gate_mounts(dep)
        if mounts:
            gate["volumeMounts"] = [{"name": vol, "mountPath": "/" + path} for vol, (path, _) in mounts.items()]
        gates.append(gate)
    return gates


def _gate_mounts(dep: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """The volumes a gate mounts: an exec probe may read or write the dependency's volumes (a
    marker file, a socket's folder), so its gate has them where the dependency has them — the
    same claim for a persistent one, a fresh emptyDir for the others."""
    return _mounts(dep) if dep["readiness"] and dep["readiness"]["kind"] == "exec" else {}


def _probe(service: Mapping[str, Any], probe: Mapping[str, Any], liveness: bool, ctx: _Context) -> dict[str, Any]:
    """A readinessProbe or livenessProbe, in whole seconds."""
    kind = probe["kind"]
    out: dict[str, Any]
    if kind == "exec" or (kind == "http" and probe.get("json") and not liveness):  # the kubelet reads no body
        argv = probe["argv"] if liveness else probe_argv(ctx.deployment, service["name"])
        out = {"exec": {"command": [literal(arg) for arg in argv]}}
    else:
        action: dict[str, Any] = {}
        if kind == "http":
            action["path"] = probe["path"]
        action["port"] = probe.get("port") or ctx.port(service["name"])
        if ctx.network == "host":
            action["host"] = probe.get("host") or "127.0.0.1"
        if kind == "http":
            action["scheme"] = probe["scheme"].upper()
        out = {"httpGet" if kind == "http" else "tcpSocket": action}
    out.update(initialDelaySeconds=whole(probe["initial_delay"]), periodSeconds=max(1, whole(probe["period"])),
               timeoutSeconds=max(1, whole(probe["timeout"])),
               successThreshold=1 if liveness else probe["success_threshold"],
               failureThreshold=probe["failure_threshold"])
    return out


def _container(service: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    name = service["name"]
    image, pull = ctx.image(name)
    out: dict[str, Any] = {"name": name.replace("_", "-"), "image": image, "imagePullPolicy": pull}
    if service["ports"]:
        out["ports"] = [{"containerPort": port, "protocol": "TCP"} for port in service["ports"]]
    if service["env_files"]:
        out["envFrom"] = [{"configMapRef": {"name": ctx.config_maps[path]}} for path in service["env_files"]]
    gpus = service["gpus"]
    if gpus is not None:
        out["env"] = [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}]
        if gpus == "all":
            out["env"].append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"})
    if service["readiness"]:
        out["readinessProbe"] = _probe(service, service["readiness"], False, ctx)
    if service["liveness"]:
        out["livenessProbe"] = _probe(service, service["liveness"], True, ctx)
    if gpus is not None and gpus != "all":
        out["resources"] = {"limits": {GPU: gpus * service["replicas"]}}
    mounts = _mounts(service)
    if mounts:
        out["volumeMounts"] = [{"name": vol, "mountPath": "/" + path} for vol, (path, _) in mounts.items()]
    if service.get("secrets"):  # the supervisor decrypts them with the identity the Secret mounts
        out.setdefault("env", []).append({"name": IDENTITY_FILE_ENV, "value": f"{IDENTITY_MOUNT}/identity"})
        out.setdefault("volumeMounts", []).append({"name": IDENTITY_SECRET, "mountPath": IDENTITY_MOUNT,
                                                   "readOnly": True})
    return out


def _mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """The service's volumes: name → (normalized path, persistent); a path listed twice once."""
    mounts: dict[str, tuple[str, bool]] = {}
    for volume in service["volumes"]:
        path = posixpath.normpath(volume["path"])
        mounts.setdefault(volume_name(path), (path, volume["persistent"]))
    return mounts


def _pod(service: Mapping[str, Any], ctx: _Context, restart: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if ctx.network == "host":
        spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    if ctx.runtime_class and service["gpus"] is not None:
        spec["runtimeClassName"] = ctx.runtime_class
    spec["restartPolicy"] = restart
    spec["terminationGracePeriodSeconds"] = whole(service["stop_grace_period"] + SUPERVISOR_STOP)
    gates = _gates(service, ctx)
    if gates:
        spec["initContainers"] = gates
    spec["containers"] = [_container(service, ctx)]
    mounts = _mounts(service)
    for dep_name, condition in service["depends_on"].items():
        if condition == "healthy":
            for name, mount in _gate_mounts(ctx.services[dep_name]).items():
                mounts.setdefault(name, mount)
    volumes = []
    for name, (_, persistent) in mounts.items():
        source = ({"persistentVolumeClaim": {"claimName": f"{ctx.prefix}-{name}"}} if persistent
                  else {"emptyDir": {}})
        volumes.append({"name": name, **source})
    if service.get("secrets"):  # optional: without it the pod runs, and the service says what is missing
        volumes.append({"name": IDENTITY_SECRET, "secret": {"secretName": ctx.age_identity, "optional": True,
                                                            "defaultMode": 0o400}})
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {"labels": _labels(ctx.deployment, service["name"])}, "spec": spec}


def _workload(service: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    """A Deployment, or a Job for a oneshot."""
    name = service["name"]
    metadata = _metadata(ctx.names[name], _labels(ctx.deployment, name), ctx.namespace)
    if service["oneshot"]:
        limit = 0 if service["restart"] == "no" else (service["max_restarts"] or JOB_BACKOFF_LIMIT)
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
                "spec": {"backoffLimit": limit, "template": _pod(service, ctx, "Never")}}
    spec: dict[str, Any] = {"replicas": 1,
                            "selector": {"matchLabels": {NAME: name, PART_OF: ctx.deployment}}}
    if ctx.network == "host" or any(persistent for _, persistent in _mounts(service).values()):
        spec["strategy"] = {"type": "Recreate"}
    spec["template"] = _pod(service, ctx, "Always")
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def _service(service: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    name = service["name"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(ctx.names[name], _labels(ctx.deployment, name), ctx.namespace),
            "spec": {"selector": {NAME: name, PART_OF: ctx.deployment},
                     "ports": [{"name": f"p{port}", "port": port, "targetPort": port, "protocol": "TCP"}
                               for port in service["ports"]]}}


def _config_map(path: str, name: str, ctx: _Context) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(name, _labels(ctx.deployment), ctx.namespace),
            "data": dict(ctx.target.env_files[path])}


def _claim(name: str, ctx: _Context) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": ctx.storage}}}
    if ctx.storage_class:
        spec["storageClassName"] = ctx.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _metadata(f"{ctx.prefix}-{name}", _labels(ctx.deployment), ctx.namespace), "spec": spec}


def documents(plan: Plan, target: Target) -> list[dict[str, Any]]:
    """Every object, in order: ConfigMaps, PersistentVolumeClaims, then per service its Service
    (with ports) and its Deployment or Job."""
    return _documents(_Context(plan, target))


def _documents(ctx: _Context) -> list[dict[str, Any]]:
    plan = ctx.plan
    out = [_config_map(path, name, ctx) for path, name in ctx.config_maps.items()]
    out += [_claim(name, ctx) for name, entry in ctx.claims.items() if entry["claimed"]]
    for service in plan["services"]:
        if service["ports"]:
            out.append(_service(service, ctx))
        out.append(_workload(service, ctx))
    return out


def _rounded(probe: Mapping[str, Any]) -> list[str]:
    """The probe's times that whole seconds change: ``period 0.2s → 1s``."""
    changed = []
    for key, least in (("initial_delay", 0), ("period", 1), ("timeout", 1)):
        value = probe[key]
        kept = max(least, whole(value))
        if kept != value:
            changed.append(f"{key} {seconds(value)}s → {kept}s")
    return changed


def _notes(plan: Plan, ctx: _Context) -> list[str]:
    """What this deployment means that its manifests cannot say, one line each."""
    services = plan["services"]
    notes = ["a service that ends is restarted by the kubelet, a failed oneshot's Job gives up alone: the "
             "other pods run on (dream stops the whole deployment unless the service is allowed_to_exit)"]
    if any(not s["oneshot"] or s["restart"] != "no" for s in services):
        notes.append("restart delays are the kubelet's (10s doubling to 5m, from 10s again after 10m of "
                     "running; a Job's retries likewise), not backoff/max_backoff")
    if any(s["readiness"] for s in services):
        notes.append("readiness probes go on after the first pass (dream stops probing then); a later "
                     "failure takes the pod out of its Service")
    if any(s["liveness"] for s in services):
        notes.append("the kubelet's liveness probes start with the container (after initial_delay), not "
                     "from readiness on, and a failure restarts the whole container")
    if ctx.config_maps:
        notes.append("env files are ConfigMaps of the values read at render time (render again after a "
                     "change); passed as the container's environment they rank below the deployment's env "
                     "and PORT (dream ranks them above)")
    if ctx.network == "host":
        notes.append("network host: every pod on its node's network, so services reach each other on "
                     "127.0.0.1 only when all pods of the deployment run on one node")
    else:
        notes.append("network cluster: the model's 127.0.0.1 addresses do not carry over: services reach "
                     "each other by Service name (<deployment>-<service>, declared ports only), and "
                     "Services and http/tcp probes reach the pod's own address (listen on 0.0.0.0)")
    for name, entry in ctx.claims.items():
        if len(entry["claimed"]) > 1:
            notes.append(f"{ctx.prefix}-{name}: one ReadWriteOnce claim mounted by {', '.join(entry['claimed'])}: "
                         "their pods must run on one node")
        if len(entry["empty"]) > 1 or (entry["empty"] and entry["claimed"]):
            notes.append(f"{name}: not persistent in {', '.join(entry['empty'])}: an emptyDir of each pod, "
                         "not shared with the other services that list it")
    for service in services:
        name, readiness, liveness = service["name"], service["readiness"], service["liveness"]
        restart, max_restarts = service["restart"], service["max_restarts"]
        if service["oneshot"]:
            if restart != "no":
                limit = max_restarts or JOB_BACKOFF_LIMIT
                notes.append(f"{name}: a oneshot's Job retries a failure in a new pod, at most {limit} times "
                             f"(restart {restart}, max_restarts {max_restarts})")
        else:
            if restart != "always":
                notes.append(f"{name}: restart {restart} is Always (a Deployment's only policy): the kubelet "
                             "restarts it whenever it ends, exit 0 included")
            if restart != "no" and max_restarts:
                notes.append(f"{name}: the kubelet restarts without limit (max_restarts {max_restarts} dropped)")
        if service["replicas"] > 1:
            notes.append(f"{name}: its {service['replicas']} replicas run in one container of one pod "
                         "(replicas: 1; one probe, one restart for all)")
        for dep, condition in service["depends_on"].items():
            probe = ctx.services[dep]["readiness"]
            if condition == "started":
                notes.append(f"{name}: does not wait for {dep} to start (Kubernetes starts pods in no order)")
            elif condition == "completed_successfully":
                notes.append(f"{name}: does not wait for {dep} to complete (a pod cannot see a Job complete "
                             f"without API access; `doit run:kubernetes` waits for it with kubectl)")
            elif probe is None:
                notes.append(f"{name}: {dep} has no readiness probe, so healthy is started: no wait "
                             "(Kubernetes starts pods in no order)")
            elif probe["kind"] == "exec":
                notes.append(f"{name}: wait-{dep} runs {dep}'s exec probe in {dep}'s image inside {name}'s pod: "
                             f"it sees {dep}'s network (host) and persistent volumes, not its processes, nor the "
                             "files of its other volumes (a fresh emptyDir)")
        for which, probe in (("readiness", readiness), ("liveness", liveness)):
            changed = _rounded(probe) if probe else []
            if changed:
                notes.append(f"{name}: {which} {', '.join(changed)} (Kubernetes probes in whole seconds, "
                             "period and timeout at least 1)")
        if (readiness and readiness["kind"] != "exec" and not readiness.get("json") and service["replicas"] > 1
                and not readiness.get("port")):
            notes.append(f"{name}: the readinessProbe checks the first replica's PORT only")
        if liveness and liveness["success_threshold"] > 1:
            notes.append(f"{name}: liveness success_threshold {liveness['success_threshold']} is 1 "
                         "(Kubernetes' only value)")
        if readiness and readiness.get("json"):
            notes.append(f"{name}: its http readiness checks a JSON body, which an httpGet probe cannot: the "
                         "readinessProbe runs the image's probe tool (exec) instead")
            if any(name in dep and dep[name] == "healthy" for dep in (s["depends_on"] for s in services)) \
                    and ctx.network == "cluster":
                notes.append(f"{name}: the wait-{name} gates (cluster network) check its Service's http status, "
                             "not the JSON body")
        if liveness and liveness.get("json"):
            notes.append(f"{name}: the livenessProbe checks the http status only, not the JSON body (the "
                         "supervisor inside checks the body too)")
        if liveness and liveness["kind"] == "exec":
            notes.append(f"{name}: the exec liveness probe runs as root in / with the image's environment, "
                         "not as the service's user, in its working_dir, with its env")
        if service["gpus"] == "all":
            notes.append(f"{name}: gpus all requests no {GPU} (a count); NVIDIA_VISIBLE_DEVICES=all shows it "
                         "its node's GPUs where the NVIDIA runtime honours that variable")
        if service["log_file"]:
            notes.append(f"{name}: log_file {service['log_file']} is written inside its container (kept only "
                         "below a persistent volume); `kubectl logs` has the output")
    if plan["log_dir"]:
        notes.append(f"log_dir {plan['log_dir']} is written inside each container (kept only below a "
                     "persistent volume)")
    if any(service.get("secrets") for service in services):
        notes.append(f"secrets are decrypted in each pod by its supervisor with the identity from the Secret "
                     f"{ctx.age_identity} (key identity), which you create: kubectl create secret generic "
                     f"{ctx.age_identity} --from-file=identity=KEYFILE; file secrets land in the container's "
                     "/run/secrets")
    return notes


def _dump(document: Any) -> str:
    text: str = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=10_000)
    return text


class KubernetesRenderer:
    """``build/<deployment>/kubernetes/``: ``kustomization.yaml`` and ``<deployment>.yaml``."""

    name = "kubernetes"

    def render(self, plan: Plan, target: Target) -> list[File]:
        return render(plan, target)


def render(plan: Plan, target: Target) -> list[File]:
    """``kustomization.yaml``, then ``<deployment>.yaml``: its header, then every object."""
    ctx = _Context(plan, target)
    objects = _documents(ctx)
    deployment, manifest = plan["name"], f"{plan['name']}.yaml"
    namespace = f" -n {ctx.namespace}" if ctx.namespace else ""
    kustomization: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if ctx.namespace:
        kustomization["namespace"] = ctx.namespace
    kustomization["resources"] = [manifest]
    kustomize_header = [
        f"# Deployment {deployment} for kustomize, rendered by dream (`doit render:kubernetes`); do not edit.",
        f"# kubectl apply -k {target.out}   (`kubectl kustomize {target.out}` prints what it applies)"]
    header = [
        f"# Deployment {deployment}, rendered by dream (`doit render:kubernetes`); do not edit.",
        f"# Run: doit run:kubernetes -d {deployment}   (or, once `doit push:{deployment}-<service>` pushed "
        "every service's image:",
        f"#      kubectl apply -k {target.out})",
        f"# Stop: kubectl delete {','.join(KINDS)}{namespace} -l {selector(deployment)}   (add pvc to "
        "drop the data)",
        f"# Podman: doit run:podman-kube -d {deployment}   (podman kube play, local images)",
        "# Each container runs dream's supervisor with its service's plan (command, env, user,",
        "# working_dir, config files, volumes, liveness, replicas). What Kubernetes cannot express:"]
    header += [f"# - {note}" for note in _notes(plan, ctx)]
    body = "---\n".join(_dump(document) for document in objects)
    return [File("kustomization.yaml", "\n".join(kustomize_header) + "\n" + _dump(kustomization)),
            File(manifest, "\n".join(header) + "\n" + body)]
