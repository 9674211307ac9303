"""Podman runs a deployment's Kubernetes manifests on this machine: ``doit run:podman-kube``
(Debian's podman 4.3, with catatonit for the pods' infra containers), and ``doit load:<image>
--into podman`` puts an image of the store into podman's image storage.

**The load.** As `dream.engine.load`'s pull: every blob is checked against its digest first, the
store's image is served on 127.0.0.1 (`dream.registry.serve.StoreRegistry`) for the length of one
``podman pull --tls-verify=false 127.0.0.1:PORT/<name>@<digest>`` (podman fetches only the layers
it lacks), then ``podman tag`` names it ``localhost/<name>:<tag>`` and ``podman untag`` removes the
temporary ``127.0.0.1:PORT`` name. No archive is written; podman's image ID is the config digest.

**The run.** ``up`` loads each service's image (``render:images``) as ``<deployment>-<service>:latest``,
reads ``<files>/<deployment>.yaml`` (dream/renderers/kubernetes.py, rendered with local images)
and writes podman's variant of it, `podman_variant`, to ``<files>/podman-kube.yaml``:

- no PersistentVolumeClaim: podman 4.3 fails a play whose claim's volume exists ("volume already
  exists"), and a second run must keep the data; without the claim podman makes the volume from
  ``claimName`` itself the first time and reuses it after;
- a Job is the Pod of its template (podman 4.3 plays no Job: "does not contain any supported
  kube kind"), so the pod of a Job is named as the Job, a Deployment's ``<name>-pod-0``;
- each pod's ``restartPolicy`` is the service's (``restart: no`` and oneshots Never, ``on-failure``
  OnFailure, ``always`` Always), as Compose's, which a Deployment cannot say; but never Always
  with init containers: podman 4.3 restarts a finished "once" init container under Always, then
  fails the play removing it (OnFailure then);
- under ``hostNetwork`` no container lists ``ports`` (podman 4.3: "PortMappings can only be used
  with Bridge or slirp4netns networking");
- no ``livenessProbe``: podman would make it a healthcheck, which needs systemd's timers (an error
  line per container where there is no systemd) and only ever marks a container unhealthy; the
  supervisor in the container runs the liveness probe itself and restarts the service;
- the pods in start order (a dependency before its dependents): ``podman kube play`` starts the
  pods one by one and waits for each pod's init containers, so a gate (``wait-<dep>``) waiting
  for a pod not started yet would wait for ever.

Services stay (podman ignores them), and so do readiness probes (podman 4.3 does not map them).
Then ``podman kube play --replace`` (a pod left by a run that was killed is replaced); while it
plays and after, ``up`` streams every container's log (``podman logs -f``, again from the last line
shown when podman restarts it), each line prefixed ``<service> | ``, and runs each started service's
readiness probe in its container (``podman exec <container> python3 -m dream_supervisor probe
<plan>``: the probe as the supervisor runs it; podman has no readiness of its own) until it passes,
saying so. It returns when every container ended for good (exited, and its restart policy will not
start it again), or on Ctrl-C (or SIGTERM / SIGHUP to dream); either way ``down`` follows: each pod
is stopped, dependents first, within its ``terminationGracePeriodSeconds`` (podman 4.3 ignores that
field; a second Ctrl-C kills the pod instead), then removed (``podman pod rm``, as ``podman kube
down`` does, which podman 4.3 breaks off at the first pod missing, leaving the others: after a
failed play); the volumes podman made for configMap volumes go, the claims' volumes (the data)
stay unless ``remove_volumes``.

The exit code: the first failing container's (in start order), else 0; after Ctrl-C ``down``'s;
a play that fails is one line, podman's error, once ``down`` removed what it made.
Every podman process runs in a process group of its own, so a Ctrl-C reaches none of them
directly: it is this module that stops the deployment, once.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping

import yaml

from dream.errors import DreamError
from dream.managers.compose import ComposeManager
from dream.managers.interrupts import signals_as_interrupt
from dream.renderers.base import File, Plan
from dream.services.per_service import probe_argv

if TYPE_CHECKING:
    from dream.engine import Loaded
    from dream.oci.descriptor import Descriptor
    from dream.store.layout import Store

PODMAN = "podman"
VARIANT_FILE = "podman-kube.yaml"
NAME_LABEL = "app.kubernetes.io/name"
POLL = 0.5  # seconds between looks at the containers' states
READY_LEAST = 0.1  # the shortest pause between two readiness probes (a `podman exec` takes longer)
INSTALL = "apt-get install podman catatonit"
ENDED = ("exited", "stopped", "dead")
NOT_STARTED = ("created", "configured", "initialized")

Popen = Callable[..., "subprocess.Popen[Any]"]
Run = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _own_group(argv: list[str], **options: Any) -> subprocess.Popen[Any]:
    """A podman process in a process group of its own: Ctrl-C reaches dream only."""
    return subprocess.Popen(argv, process_group=0, **options)


def _quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A short podman command in a group of its own, its output captured."""
    return subprocess.run(argv, capture_output=True, text=True, process_group=0)


def _captured(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A podman command of a load: Ctrl-C ends it with dream (nothing is left half made)."""
    return subprocess.run(argv, capture_output=True, text=True)


def executable(which: Callable[[str], str | None] = shutil.which) -> str:
    """podman's path, or the one line that says how to get it."""
    found = which(PODMAN)
    if found is None:
        raise DreamError(f"podman is not installed; install Debian's podman ({INSTALL}) to load "
                         "images into podman or run a deployment with run:podman-kube")
    return found


def last_line(text: str) -> str:
    """podman's error: its last ``Error: …`` line (a play also logs ``level=error`` lines that
    do not fail it), else its last line that says something."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    return (errors or lines or ["no output"])[-1]


# -- the load ---------------------------------------------------------------------------------

def load_into_podman(store: Store, manifest: Descriptor, name: str, tags: list[str],
                     run: Run = _captured, which: Callable[[str], str | None] = shutil.which) -> Loaded:
    """Load the image whose manifest is ``manifest`` (every blob in the store) into podman as
    ``localhost/<name>:<tag>`` for each tag (module docstring: the load)."""
    from dream.engine import Loaded
    from dream.oci.descriptor import Descriptor
    from dream.progress import bar
    from dream.registry.serve import StoreRegistry

    podman = executable(which)
    body = store.read_manifest(manifest.digest)
    for blob in [body["config"], *body["layers"]]:  # a corrupt or missing blob: one line, before anything
        store.verified_path(Descriptor.from_json(blob))
    with bar(f"load {name}", None) as advance:
        registry = StoreRegistry(store, manifest, name, advance=advance)
        with registry:
            reference = f"{registry.host}/{name}@{manifest.digest}"
            print(f"{name}: serving the store on {registry.host} while podman pulls {reference}", flush=True)
            pulled = run([podman, "pull", "--quiet", "--tls-verify=false", reference])
            counts = registry.counts
        # the server is stopped here: the port is closed
        if pulled.returncode != 0:
            why = f" (the store refused: {counts.refused[0]})" if counts.refused else ""
            raise DreamError(f"podman pull from the store failed: {last_line(pulled.stderr)}{why}")
        image_id = registry.config.digest.split(":", 1)[1]  # podman's image ID is the config's digest
        done: list[str] = []
        try:
            for tag in tags:
                named = f"localhost/{name}:{tag}"
                tagged = run([podman, "tag", image_id, named])
                if tagged.returncode != 0:
                    raise DreamError(f"podman tag {named} failed: {last_line(tagged.stderr)}")
                done.append(named)
        finally:  # the temporary 127.0.0.1:PORT name only: the image stays under its tags
            run([podman, "untag", image_id, reference])
    return Loaded(sorted(done), "registry", len(registry.layers), len(counts.layers), counts.bytes)


# -- podman 4.3's variant of the manifests (pure) ---------------------------------------------

@dataclass(frozen=True)
class Pod:
    """One pod podman makes of a workload: its name, the service, its containers' names
    (``<pod>-<container>``), its stop grace in seconds, its init containers' names."""

    name: str
    service: str
    containers: tuple[str, ...]
    grace: int
    init: tuple[str, ...] = ()


def _service_of(document: Mapping[str, Any]) -> str:
    """The plan's service a workload runs: its ``app.kubernetes.io/name`` label."""
    labels = document.get("metadata", {}).get("labels") or {}
    template = (document.get("spec", {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    return str(labels.get(NAME_LABEL) or template.get(NAME_LABEL) or document.get("metadata", {}).get("name", ""))


def _restart(service: Mapping[str, Any] | None, current: str) -> str:
    """The pod's restartPolicy for ``service`` (its Compose policy); unknown: the current one."""
    if service is None:
        return current
    if service["oneshot"] or service["restart"] == "no":
        return "Never"
    return "OnFailure" if service["restart"] == "on-failure" else "Always"


def _pod_spec(spec: dict[str, Any], service: Mapping[str, Any] | None) -> dict[str, Any]:
    policy = _restart(service, str(spec.get("restartPolicy") or "Always"))
    if spec.get("initContainers") and policy == "Always":
        policy = "OnFailure"
    spec["restartPolicy"] = policy
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if spec.get("hostNetwork"):
            container.pop("ports", None)
        container.pop("livenessProbe", None)
    return spec


def _podman_workload(document: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A Deployment as podman plays it, or a Job as the Pod of its template."""
    out = copy.deepcopy(dict(document))
    service = services.get(_service_of(document))
    if out["kind"] == "Job":
        template = out["spec"]["template"]
        metadata = {key: value for key, value in out["metadata"].items() if key in ("name", "namespace")}
        labels = {**(out["metadata"].get("labels") or {}), **((template.get("metadata") or {}).get("labels") or {})}
        if labels:
            metadata["labels"] = labels
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": _pod_spec(template["spec"], service)}
    _pod_spec(out["spec"]["template"]["spec"], service)
    return out


def _start_order(workloads: list[dict[str, Any]], services: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Workloads with each service's dependencies first, otherwise in the given order (a cycle,
    which the plan never has, keeps the given order)."""
    names = [_service_of(workload) for workload in workloads]
    present = set(names)
    left, placed, ordered = list(range(len(workloads))), set(), []
    while left:
        ready = next((i for i in left if all(dep in placed or dep not in present for dep in
                                             (services.get(names[i]) or {}).get("depends_on", {}))), left[0])
        left.remove(ready)
        placed.add(names[ready])
        ordered.append(workloads[ready])
    return ordered


def podman_variant(documents: list[Any], plan: Plan) -> list[dict[str, Any]]:
    """The manifests as podman 4.3's ``kube play`` runs them (module docstring: what changes and
    why); the other documents keep their order, then the workloads in start order."""
    services = {service["name"]: service for service in plan["services"]}
    kept, workloads = [], []
    for document in documents:
        if not isinstance(document, dict):
            continue
        kind = document.get("kind")
        if kind == "PersistentVolumeClaim":
            continue
        if kind in ("Deployment", "Job"):
            workloads.append(_podman_workload(document, services))
        else:
            kept.append(copy.deepcopy(document))
    return [*kept, *_start_order(workloads, services)]


def pods(documents: list[Any]) -> list[Pod]:
    """The pods podman makes of the (variant) documents, in their order."""
    found = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") not in ("Deployment", "Pod"):
            continue
        name = str(document["metadata"]["name"])
        spec = document["spec"]["template"]["spec"] if document["kind"] == "Deployment" else document["spec"]
        pod = f"{name}-pod-0" if document["kind"] == "Deployment" else name
        found.append(Pod(pod, _service_of(document), tuple(f"{pod}-{c['name']}" for c in spec.get("containers", [])),
                         int(spec.get("terminationGracePeriodSeconds", 30)),
                         tuple(f"{pod}-{c['name']}" for c in spec.get("initContainers", []))))
    return found


def _pod_volumes(documents: list[Any], source: str) -> list[str]:
    names: list[str] = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") not in ("Deployment", "Pod", "Job"):
            continue
        spec = document["spec"] if document["kind"] == "Pod" else document["spec"]["template"]["spec"]
        for volume in spec.get("volumes") or []:
            if source in volume:
                name = str(volume[source]["claimName" if source == "persistentVolumeClaim" else "name"])
                if name not in names:
                    names.append(name)
    return names


def configmap_volumes(documents: list[Any]) -> list[str]:
    """The volumes podman makes for configMap volumes (named as the ConfigMap) and leaves."""
    return _pod_volumes(documents, "configMap")


def claim_volumes(documents: list[Any]) -> list[str]:
    """The volumes that hold the claims (the data): named by ``claimName``."""
    return _pod_volumes(documents, "persistentVolumeClaim")


def variant_text(documents: list[dict[str, Any]], source: str) -> str:
    return (f"# podman 4.3's variant of {source}, written by dream's run:podman-kube "
            "(dream/managers/podman.py says what differs and why); do not edit.\n"
            + yaml.safe_dump_all(documents, sort_keys=False))


# -- the run ----------------------------------------------------------------------------------

class PodmanKubeManager:
    """A deployment's Kubernetes manifests under ``podman kube play`` (module docstring).

    ``store`` and ``images`` (service → manifest) are the per-service images ``up`` loads
    first; ``popen`` starts a long-running podman command and ``run`` a short one (tests pass
    fakes), ``load`` is `load_into_podman`."""

    name = "podman-kube"
    renders: str | None = "kubernetes"

    def __init__(self, store: Store | None = None, images: Mapping[str, Descriptor] | None = None,
                 remove_volumes: bool = False, popen: Popen = _own_group, run: Run = _quiet,
                 load: Callable[..., Loaded] | None = None,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.store, self.images, self.remove_volumes = store, dict(images or {}), remove_volumes
        self.popen, self.run, self.which = popen, run, which
        self.load = load or load_into_podman
        self._print = threading.Lock()
        self._stopping = threading.Event()
        self._followers: dict[str, tuple[subprocess.Popen[Any], threading.Thread]] = {}
        self._shown: dict[str, tuple[str, tuple[int, int]]] = {}  # container → its last log line's time

    def executable(self) -> str:
        return executable(self.which)

    # -- files ----------------------------------------------------------------------------
    def variant(self, plan: Plan, files: Path | None) -> tuple[Path, list[dict[str, Any]]]:
        """Write ``<files>/podman-kube.yaml`` from ``<files>/<deployment>.yaml``; its path and documents."""
        if files is None:
            raise DreamError("run:podman-kube needs the rendered manifests (render:kubernetes)")
        source = files / f"{plan['name']}.yaml"
        try:
            documents = list(yaml.safe_load_all(source.read_text()))
        except OSError as exc:
            raise DreamError(f"cannot read the manifests {source}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise DreamError(f"{source} is not YAML: {str(exc).splitlines()[0]}") from None
        variant = podman_variant(documents, plan)
        from dream.managers.host import write_files
        write_files(files, [File(VARIANT_FILE, variant_text(variant, source.name))])
        return files / VARIANT_FILE, variant

    # -- up -------------------------------------------------------------------------------
    def up(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Load the images, play the variant, follow it until it ends or Ctrl-C, take it down."""
        podman = self.executable()  # no podman: one line before any load
        path, documents = self.variant(plan, files)
        ComposeManager(self.store, self.images, load=self.load).load_images(plan["name"])
        sys.stdout.flush()
        played, failure, interrupted, code = pods(documents), "", False, 0
        self._stopping.clear()
        self._shown.clear()
        with signals_as_interrupt():
            try:
                self._remove_volumes(podman, configmap_volumes(documents))
                code, failure = self._watch(podman, plan, played, path)
            except KeyboardInterrupt:
                interrupted = True
                print(f"\ndream: stopping {plan['name']} (each pod stops within its grace period; "
                      "Ctrl-C again kills it)", file=sys.stderr, flush=True)
            finally:
                down = self.down(plan, files, root)
        if failure:
            raise DreamError(f"podman kube play failed: {failure}")
        return down if interrupted else (code or down)

    def _finish(self, argv: list[str], interrupted: Callable[[subprocess.Popen[Any]], None] | None,
                ) -> tuple[int, str]:
        """Run a podman command to its end, its output (stdout and stderr) kept in a temporary
        file; ``interrupted`` is called on Ctrl-C (None: go on waiting)."""
        with tempfile.TemporaryFile("w+", errors="replace") as output:
            process = self.popen(argv, stdout=output, stderr=subprocess.STDOUT, text=True)
            code = _finish(process, interrupted)
            output.seek(0)
            return code, output.read()

    def _watch(self, podman: str, plan: Plan, played: list[Pod], path: Path) -> tuple[int, str]:
        """``podman kube play``, and meanwhile and after it each container's log and readiness,
        until every container ended for good: the first failing container's exit code (in start
        order), else 0; or the play's error line. The play starts the pods one by one, waiting
        for each pod's init containers (the gates), so a dependency's log and readiness show
        while its dependents wait. A Ctrl-C ends the play (SIGTERM) and goes on to `up`."""
        services = {service["name"]: service for service in plan["services"]}
        containers = {name: pod.service for pod in played for name in pod.containers}
        waiting = {service for service in containers.values() if service in services and services[service]["readiness"]}
        followed: dict[str, str] = {}  # container → the start (State.StartedAt) whose log is followed
        probed: set[str] = set()
        states: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryFile("w+", errors="replace") as output:
            play: subprocess.Popen[Any] | None = self.popen([podman, "kube", "play", "--replace", str(path)],
                                                             stdout=output, stderr=subprocess.STDOUT, text=True)
            try:
                while True:
                    if play is not None and play.poll() is not None:
                        if play.returncode != 0:
                            output.seek(0)
                            return 0, last_line(output.read())
                        play = None
                    seen = self._states(podman, list(containers))
                    if seen is not None:  # None: podman did not answer this time
                        states = seen
                        for name, state in states.items():
                            status, started = state["State"].get("Status"), str(state["State"].get("StartedAt", ""))
                            if status in NOT_STARTED:
                                continue
                            if followed.get(name) != started and not self._following(name):
                                self._follow(podman, name, containers[name])
                                followed[name] = started
                            if containers[name] in waiting and name not in probed:
                                probed.add(name)
                                threading.Thread(target=self._await_ready, daemon=True, args=(
                                    podman, plan["name"], name, containers[name],
                                    services[containers[name]]["readiness"], waiting)).start()
                        if play is None and all(ended_for_good(states.get(name)) for name in containers) \
                                and not any(self._following(name) for name in containers):
                            break
                    time.sleep(POLL)
            except KeyboardInterrupt:
                if play is not None and play.poll() is None:
                    play.send_signal(signal.SIGTERM)
                    _finish(play, None)  # not left running behind `down`
                raise
        self._say(f"dream: every container of {plan['name']} ended", error=True)
        codes = [int(states[name]["State"].get("ExitCode") or 0) for name in containers if name in states]
        return next((code for code in codes if code), 0), ""

    def _states(self, podman: str, names: list[str]) -> dict[str, dict[str, Any]] | None:
        """``podman container inspect`` of those containers that exist, by name (a name
        missing: gone); None when podman's answer was no JSON."""
        result = self.run([podman, "container", "inspect", *names])
        try:
            found = json.loads(result.stdout or "[]")
        except ValueError:
            return None
        if not isinstance(found, list):
            return None
        return {str(item.get("Name", "")).lstrip("/"): item for item in found if isinstance(item, dict)}

    def _following(self, name: str) -> bool:
        follower = self._followers.get(name)
        return follower is not None and follower[1].is_alive()

    def _follow(self, podman: str, name: str, service: str) -> None:
        """``podman logs -f`` of one container, each line ``<service> | …``; it ends when the
        container does, so a restarted container is followed again, from the last line shown
        (``--since`` its timestamp; a line at or before it is not shown twice)."""
        shown = self._shown.get(name)
        process = self.popen([podman, "logs", "-f", "--timestamps", *(["--since", shown[0]] if shown else []), name],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        thread = threading.Thread(target=self._pump, args=(process.stdout, name, service), daemon=True)
        self._followers[name] = (process, thread)
        thread.start()

    def _pump(self, stream: IO[str] | None, name: str, service: str) -> None:
        if stream is None:
            return
        for line in stream:
            stamp, _, text = line.rstrip("\n").partition(" ")
            key = log_time(stamp)
            if key is None:  # not a log line: podman's own word
                text = line.rstrip()
            else:
                shown = self._shown.get(name)
                if shown is not None and key <= shown[1]:
                    continue
                self._shown[name] = (stamp, key)
            self._say(f"{service} | {text.rstrip()}")

    def _say(self, line: str, error: bool = False) -> None:
        with self._print:
            print(line, file=sys.stderr if error else sys.stdout, flush=True)

    def _await_ready(self, podman: str, deployment: str, container: str, service: str,
                     probe: Mapping[str, Any], waiting: set[str]) -> None:
        """Run the service's readiness probe in its container until it passes; say when (and
        when the last of ``waiting`` passed)."""
        if self._stopping.wait(probe["initial_delay"]):
            return
        failures = 0
        while not self._stopping.is_set():
            result = self.run([podman, "exec", container, *probe_argv(deployment, service)])
            if result.returncode == 0:
                with self._print:
                    waiting.discard(service)
                    print(f"dream: {service} is ready", file=sys.stderr, flush=True)
                    if not waiting:
                        print(f"dream: every service of {deployment} with a readiness probe is ready",
                              file=sys.stderr, flush=True)
                return
            failures += 1
            if failures == probe["failure_threshold"]:
                self._say(f"dream: {service} is not ready after {failures} probes "
                          f"({last_line(result.stderr or result.stdout)}); still probing", error=True)
            self._stopping.wait(max(probe["period"], READY_LEAST))

    # -- down -----------------------------------------------------------------------------
    def down(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Stop each pod within its grace and remove it (dependents first), remove the configMap
        volumes (and with ``remove_volumes`` the claims'); let finish through Ctrl-C."""
        podman = self.executable()
        self._stopping.set()
        if files is None or not (files / VARIANT_FILE).is_file():
            documents: list[Any] = self.variant(plan, files)[1]
        else:
            documents = list(yaml.safe_load_all((files / VARIANT_FILE).read_text()))
        code = 0
        for pod in reversed(pods(documents)):
            if self.run([podman, "pod", "exists", pod.name]).returncode != 0:
                continue
            self._stop(podman, pod)
            removed, output = self._finish([podman, "pod", "rm", "--force", pod.name], None)
            if removed != 0:
                self._say(f"dream: podman pod rm {pod.name} failed: {last_line(output)}", error=True)
                code = code or removed
        volumes = configmap_volumes(documents) + (claim_volumes(documents) if self.remove_volumes else [])
        code = self._remove_volumes(podman, volumes) or code
        for follower, thread in self._followers.values():  # their containers are gone: they end
            if follower.poll() is None:
                follower.terminate()
            thread.join(timeout=5)
        self._followers.clear()
        return code

    def _stop(self, podman: str, pod: Pod) -> None:
        """``podman pod stop -t <grace>``; a Ctrl-C meanwhile kills the pod's containers instead
        (each: ``podman pod kill`` would wait for the stop's lock on the pod)."""
        def kill(process: subprocess.Popen[Any]) -> None:
            self._say(f"dream: killing {pod.name}", error=True)
            for name in [*pod.init, *pod.containers]:  # by name: a stopping one too (not in `ps`)
                self.run([podman, "kill", name])

        self._finish([podman, "pod", "stop", "-t", str(pod.grace), pod.name], kill)

    def _remove_volumes(self, podman: str, names: list[str]) -> int:
        """``podman volume rm`` of each of ``names`` that exists; the first failure's code."""
        code = 0
        for name in names:
            if self.run([podman, "volume", "exists", name]).returncode != 0:
                continue
            removed = self.run([podman, "volume", "rm", name])
            if removed.returncode != 0:
                self._say(f"dream: podman volume rm {name} failed: {last_line(removed.stderr)}", error=True)
                code = code or removed.returncode
        return code


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def log_time(stamp: str) -> tuple[int, int] | None:
    """``podman logs --timestamps``' RFC 3339 time (nanoseconds, trailing zeros dropped) as
    (seconds since the epoch, nanoseconds): comparable; None when it is no such time."""
    match = _STAMP.match(stamp)
    if match is None:
        return None
    seconds = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3]))
    return int(seconds.timestamp()), int((match[2] or "0").ljust(9, "0"))


def ended_for_good(state: Mapping[str, Any] | None) -> bool:
    """A container gone, or exited for good: its restart policy will not start it again."""
    if state is None:
        return True
    status = state["State"].get("Status", "")
    if status not in ENDED:
        return False
    policy = ((state.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name", "")
    code = int(state["State"].get("ExitCode") or 0)
    return policy in ("", "no") or (policy == "on-failure" and code == 0)


def _finish(process: subprocess.Popen[Any], interrupted: Callable[[subprocess.Popen[Any]], None] | None) -> int:
    """Wait for ``process`` even through Ctrl-C (half a ``down`` leaves pods behind),
    calling ``interrupted`` on each, or saying it goes on."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            if interrupted is not None:
                interrupted(process)
            else:
                print("dream: still taking the deployment down", file=sys.stderr, flush=True)


__all__ = ["PODMAN", "VARIANT_FILE", "Pod", "PodmanKubeManager", "claim_volumes",
           "configmap_volumes", "ended_for_good", "executable", "load_into_podman", "log_time", "podman_variant",
           "pods"]
