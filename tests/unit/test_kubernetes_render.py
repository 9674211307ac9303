"""The Kubernetes renderer (dream.renderers.kubernetes) on plans built from recipe text and on the
real services-demo and gpu-image recipes: every mapping of the model, the header that lists what
Kubernetes cannot say, one-line errors, and every rendered object checked strictly against the
Kubernetes 1.30 schemas (kubernetes-validate, offline) and built by the real ``kubectl
kustomize`` (no cluster needed)."""

from __future__ import annotations

import http.server
import socket
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml

from dream.errors import DreamError
from dream.recipe.load import load_recipe
from dream.recipe.model import Deployment
from dream.renderers.base import File, Target
from dream.renderers.kubernetes import KubernetesRenderer, literal
from dream.services.plan import build_plan
from tests.conftest import REPO, require

K8S = "1.30.0"
DIGEST = "@sha256:" + "ab" * 32
PROBE = ["python3", "-m", "dream_supervisor", "probe"]
MANAGED = {"app.kubernetes.io/managed-by": "dream"}

SHOP = """\
services:
  db:
    command: [redis-server]
    ports: [6379]
    volumes: [var/lib/db]
    readiness: {tcp: {port: 6379}, period: 200ms, timeout: 1.5, initial_delay: 2.5,
                failure_threshold: 5, success_threshold: 2}
    liveness: {exec: 'test -d "$(pwd)" && test -n "${HOME:-x}"', period: 10, failure_threshold: 3}
    restart: always
  migrate:
    command: ./migrate.sh
    oneshot: true
    restart: on-failure
    max_restarts: 3
    env_files: [conf/base.env]
    depends_on: {db: healthy}
  api:
    command: [python3, -m, api]
    ports: [8080]
    env_files: [conf/base.env, conf/app.env]
    readiness: {http: {port: 8080, path: /health, scheme: https}, period: 2, timeout: 3}
  app:
    command: [python3, -m, app]
    ports: [8090, 8091]
    replicas: 2
    gpus: 1
    restart: on-failure
    max_restarts: 0
    stop_grace_period: 500ms
    env_files: [conf/app.env]
    volumes: [data, {path: cache, persistent: false}]
    readiness: {http: {path: /ready}}
    depends_on: {db: healthy, api: healthy, migrate: completed_successfully}
  worker:
    command: worker
    gpus: all
    restart: always
    volumes: [{path: cache/, persistent: false}]
    depends_on: [app]
    log_file: logs/worker.log
  once:
    command: ./seed.sh
    oneshot: true
    depends_on: {migrate: completed_successfully}
deployments:
  shop: {default: true}
  cl:
    kubernetes: {network: cluster, namespace: shop-ns, images: local, storage: 5Gi,
                 storage_class: fast, runtime_class: nvidia}
"""


def _project(root: Path, text: str = SHOP) -> dict[str, Deployment]:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(exist_ok=True)
    path = root / "recipes" / "shop.yaml"
    path.write_text(text)
    return load_recipe(path, root).deployments


def _real(recipe: str, deployment: str) -> Deployment:
    return load_recipe(REPO / "recipes" / f"{recipe}.yaml", REPO).deployments[deployment]


def _target(root: Path, deployment: Deployment, **changes: Any) -> Target:
    """What the task hands over: env files read, pushed images by digest (local tags under
    ``images: local``), the deployment's ``kubernetes:`` settings."""
    options = changes.pop("options", deployment.options.get("kubernetes", {}))
    out = changes.pop("out", root / "build" / deployment.name / "kubernetes")
    local = options.get("images") == "local"
    settings: dict[str, Any] = {
        "env_files": {"conf/base.env": {"A": "1"}, "conf/app.env": {"B": "two words", "C": "$(x)"}},
        "images": {name: f"{deployment.name}-{name}:latest" if local else f"reg.example:5000/{deployment.name}-{name}{DIGEST}"
                   for name in deployment.services},
        "options": options, **changes}
    return Target(root, out, **settings)


def _render(root: Path, deployment: Deployment, **changes: Any) -> list[File]:
    files = KubernetesRenderer().render(build_plan(deployment), _target(root, deployment, **changes))
    assert [f.path for f in files] == ["kustomization.yaml", f"{deployment.name}.yaml"]
    return files


def _objects(files: list[File]) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(files[1].content))


def _by(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _pod(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = _by(objects, kind, name)["spec"]["template"]["spec"]
    return spec


def _validate(files: list[File]) -> None:
    """Every object strictly against Kubernetes 1.30 (an unknown field fails too)."""
    for document in _objects(files):
        kubernetes_validate.validate(document, K8S, strict=True)


def _kustomize(root: Path, files: list[File]) -> list[dict[str, Any]]:
    """The real ``kubectl kustomize`` on the files written as the task writes them."""
    kubectl = require("kubectl")
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    for rendered in files:
        (out / rendered.path).write_text(rendered.content)
    done = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def _labels(deployment: str, service: str | None = None) -> dict[str, str]:
    named = {"app.kubernetes.io/name": service} if service else {}
    return {**named, "app.kubernetes.io/part-of": deployment, **MANAGED}


def _error(root: Path, deployment: Deployment, **changes: Any) -> str:
    with pytest.raises(DreamError) as caught:
        _render(root, deployment, **changes)
    return str(caught.value)


def test_objects_in_order_with_labels_everywhere(tmp_path: Path) -> None:
    objects = _objects(_render(tmp_path, _project(tmp_path)["shop"]))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "shop-env-conf-base-env"), ("ConfigMap", "shop-env-conf-app-env"),
        ("PersistentVolumeClaim", "shop-vol-var-lib-db"), ("PersistentVolumeClaim", "shop-vol-data"),
        ("Service", "shop-db"), ("Deployment", "shop-db"),
        ("Job", "shop-migrate"),
        ("Service", "shop-api"), ("Deployment", "shop-api"),
        ("Service", "shop-app"), ("Deployment", "shop-app"),
        ("Deployment", "shop-worker"),
        ("Job", "shop-once")]
    for o in objects:
        assert "namespace" not in o["metadata"]
        service = o["metadata"]["name"].removeprefix("shop-") if o["kind"] not in ("ConfigMap", "PersistentVolumeClaim") else None
        assert o["metadata"]["labels"] == _labels("shop", service)
        if o["kind"] in ("Deployment", "Job"):
            assert o["spec"]["template"]["metadata"]["labels"] == _labels("shop", service)
        if o["kind"] == "Deployment":
            assert o["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": service,
                                                             "app.kubernetes.io/part-of": "shop"}}
            assert o["spec"]["replicas"] == 1
            assert o["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert _by(objects, "ConfigMap", "shop-env-conf-app-env")["data"] == {"B": "two words", "C": "$(x)"}
    assert _by(objects, "PersistentVolumeClaim", "shop-vol-data")["spec"] == {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    assert _by(objects, "Service", "shop-app")["spec"] == {
        "selector": {"app.kubernetes.io/name": "app", "app.kubernetes.io/part-of": "shop"},
        "ports": [{"name": "p8090", "port": 8090, "targetPort": 8090, "protocol": "TCP"},
                  {"name": "p8091", "port": 8091, "targetPort": 8091, "protocol": "TCP"}]}


def test_host_network_pods(tmp_path: Path) -> None:
    objects = _objects(_render(tmp_path, _project(tmp_path)["shop"]))
    db = _pod(objects, "Deployment", "shop-db")
    assert db == {
        "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet", "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 12,
        "containers": [{
            "name": "db", "image": f"reg.example:5000/shop-db{DIGEST}", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 6379, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": 6379, "host": "127.0.0.1"}, "initialDelaySeconds": 3,
                               "periodSeconds": 1, "timeoutSeconds": 2, "successThreshold": 2,
                               "failureThreshold": 5},
            # the kubelet expands $(…) in exec commands: doubled, so the shell sees it as written
            "livenessProbe": {"exec": {"command": ["/bin/sh", "-c", 'test -d "$$(pwd)" && test -n "${HOME:-x}"']},
                              "initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1,
                              "successThreshold": 1, "failureThreshold": 3},
            "volumeMounts": [{"name": "vol-var-lib-db", "mountPath": "/var/lib/db"}]}],
        "volumes": [{"name": "vol-var-lib-db", "persistentVolumeClaim": {"claimName": "shop-vol-var-lib-db"}}]}
    assert _by(objects, "Deployment", "shop-db")["spec"]["strategy"] == {"type": "Recreate"}

    app = _pod(objects, "Deployment", "shop-app")
    assert app["terminationGracePeriodSeconds"] == 3  # ceil(0.5 s grace + the supervisor's 2 s)
    assert "runtimeClassName" not in app
    gates = {gate["name"]: gate for gate in app["initContainers"]}
    assert list(gates) == ["wait-db", "wait-api"]  # not migrate: completed_successfully has no gate
    assert gates["wait-db"] == {
        "name": "wait-db", "image": f"reg.example:5000/shop-db{DIGEST}", "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", "trap 'exit 143' TERM; until python3 -m dream_supervisor probe /etc/dream/services/shop-db.json; "
                                     "do sleep 0.2; done"]}
    assert gates["wait-api"]["command"][2] == ("trap 'exit 143' TERM; until python3 -m dream_supervisor probe "
                                               "/etc/dream/services/shop-api.json; do sleep 2; done")
    assert gates["wait-api"]["envFrom"] == [{"configMapRef": {"name": "shop-env-conf-base-env"}},
                                            {"configMapRef": {"name": "shop-env-conf-app-env"}}]
    (container,) = app["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "shop-env-conf-app-env"}}]
    assert container["env"] == [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 2}}  # 1 GPU × 2 replicas
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 5300, "host": "127.0.0.1",
                                                      "scheme": "HTTP"}  # PORT: 5000 + 100 × 3
    assert container["volumeMounts"] == [{"name": "vol-data", "mountPath": "/data"},
                                         {"name": "vol-cache", "mountPath": "/cache"}]
    assert app["volumes"] == [{"name": "vol-data", "persistentVolumeClaim": {"claimName": "shop-vol-data"}},
                              {"name": "vol-cache", "emptyDir": {}}]
    api = _pod(objects, "Deployment", "shop-api")["containers"][0]
    assert api["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert (api["readinessProbe"]["periodSeconds"], api["readinessProbe"]["timeoutSeconds"]) == (2, 3)

    worker = _pod(objects, "Deployment", "shop-worker")
    assert "initContainers" not in worker  # depends on app started: no gate
    (container,) = worker["containers"]
    assert "resources" not in container  # gpus all: no count to limit
    assert container["env"] == [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"},
                                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    assert worker["volumes"] == [{"name": "vol-cache", "emptyDir": {}}]
    assert _by(objects, "Deployment", "shop-worker")["spec"]["strategy"] == {"type": "Recreate"}


def test_oneshots_are_jobs(tmp_path: Path) -> None:
    objects = _objects(_render(tmp_path, _project(tmp_path)["shop"]))
    migrate, once = _by(objects, "Job", "shop-migrate"), _by(objects, "Job", "shop-once")
    assert migrate["apiVersion"] == "batch/v1"
    assert migrate["spec"]["backoffLimit"] == 3      # restart on-failure, max_restarts 3
    assert once["spec"]["backoffLimit"] == 0         # restart no
    assert "selector" not in migrate["spec"]         # the Job makes its own
    pod = migrate["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [g["name"] for g in pod["initContainers"]] == ["wait-db"]
    assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "shop-env-conf-base-env"}}]
    assert "initContainers" not in once["spec"]["template"]["spec"]


@pytest.mark.parametrize("restart,limit", [("no", 0), ("on-failure", 6)])  # max_restarts 0: Kubernetes' 6
def test_job_backoff_limit(tmp_path: Path, restart: str, limit: int) -> None:
    deployment = _project(tmp_path, "services:\n  one:\n    command: x\n    oneshot: true\n"
                                    f"    restart: {restart}\n    max_restarts: 0\n")["shop"]
    files = _render(tmp_path, deployment)
    assert _by(_objects(files), "Job", "shop-one")["spec"]["backoffLimit"] == limit
    _validate(files)


def test_cluster_network_namespace_and_local_images(tmp_path: Path) -> None:
    files = _render(tmp_path, _project(tmp_path)["cl"])
    objects = _objects(files)
    assert all(o["metadata"]["namespace"] == "shop-ns" for o in objects)
    assert yaml.safe_load(files[0].content) == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "shop-ns", "resources": ["cl.yaml"]}
    claim = _by(objects, "PersistentVolumeClaim", "cl-vol-data")["spec"]
    assert (claim["resources"]["requests"]["storage"], claim["storageClassName"]) == ("5Gi", "fast")
    pods = {o["metadata"]["name"]: (o["spec"]["template"]["spec"]) for o in objects if o["kind"] in ("Deployment", "Job")}
    for name, pod in pods.items():
        assert "hostNetwork" not in pod and "dnsPolicy" not in pod
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["imagePullPolicy"] == "Never"
            assert container["image"].endswith(":latest") and "@" not in container["image"]
        assert pod.get("runtimeClassName") == ("nvidia" if name in ("cl-app", "cl-worker") else None)
    app = pods["cl-app"]
    assert app["containers"][0]["image"] == "cl-app:latest"
    assert app["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 5300, "scheme": "HTTP"}
    assert pods["cl-db"]["containers"][0]["readinessProbe"]["tcpSocket"] == {"port": 6379}
    gates = {g["name"]: g for g in app["initContainers"]}
    assert gates["wait-db"]["image"] == "cl-db:latest"
    assert gates["wait-db"]["command"][:2] == ["python3", "-c"]
    assert "('cl-db', 6379)" in gates["wait-db"]["command"][2]
    assert "'https://cl-api:8080/health'" in gates["wait-api"]["command"][2]
    for gate in gates.values():
        compile(gate["command"][2], gate["name"], "exec")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def servers() -> Iterator[tuple[int, int, list[Any]]]:
    """A tcp port and an http port, nothing listening yet; the test starts the listeners."""
    started: list[Any] = []
    yield _free_port(), _free_port(), started
    for server in started:
        server.shutdown()
        server.server_close()


def test_cluster_gates_wait_until_the_dependency_answers(tmp_path: Path, servers: tuple[int, int, list[Any]]) -> None:
    """The cluster gates' one-liners, run for real (the Service name pointed at 127.0.0.1): they
    wait while nothing answers and end once the dependency does."""
    tcp, http_port, started = servers
    deployment = _project(tmp_path, f"""\
services:
  t: {{command: x, ports: [{tcp}], readiness: {{tcp: {{port: {tcp}}}, period: 50ms}}}}
  h: {{command: x, ports: [{http_port}], readiness: {{http: {{port: {http_port}, path: /ok}}, period: 50ms}}}}
  c: {{command: x, depends_on: {{t: healthy, h: healthy}}}}
deployments:
  g: {{kubernetes: {{network: cluster}}}}
""")["g"]
    pod = _pod(_objects(_render(tmp_path, deployment)), "Deployment", "g-c")
    gates = {g["name"]: g["command"] for g in pod["initContainers"]}
    waiting = {name: subprocess.Popen([sys.executable, "-c", argv[2].replace(f"'g-{name[5:]}'", "'127.0.0.1'")
                                       .replace(f"//g-{name[5:]}:", "//127.0.0.1:")],
                                      stdout=subprocess.PIPE, text=True)
               for name, argv in gates.items()}
    try:
        for name, proc in waiting.items():
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("waiting for ")  # nothing answers yet
            assert proc.poll() is None

        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/ok" else 404)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        import socketserver
        for server in (socketserver.TCPServer(("127.0.0.1", tcp), socketserver.BaseRequestHandler),
                       http.server.HTTPServer(("127.0.0.1", http_port), Ok)):
            started.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        for proc in waiting.values():
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in waiting.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_every_gate_ends_on_sigterm_by_itself(tmp_path: Path) -> None:
    """A gate is its container's PID 1, which gets no signal it has no handler for: each gate
    (the host one's shell, the cluster ones' python) ends on SIGTERM with 143 by its own handler,
    so a pod held at its gate stops at once. Checked here by the exit code: a process without a
    handler dies of the signal instead (-15)."""
    text = """\
services:
  t: {command: x, ports: [9], readiness: {tcp: {port: 9}, period: 50ms}}
  h: {command: x, ports: [9], readiness: {http: {port: 9, path: /}, period: 50ms}}
  e: {command: x, readiness: {exec: 'false'}, env: {}}
  c: {command: x, depends_on: {t: healthy, h: healthy}}
  d: {command: x, depends_on: {e: healthy}}
deployments:
  g: {kubernetes: {network: cluster}, services: [t, h, c]}
  k: {services: [e, d]}
"""
    projects = _project(tmp_path, text)
    cluster = _pod(_objects(_render(tmp_path, projects["g"])), "Deployment", "g-c")["initContainers"]
    host = _pod(_objects(_render(tmp_path, projects["k"])), "Deployment", "k-d")["initContainers"]
    argvs = [[sys.executable, *g["command"][1:]] for g in cluster]
    argvs += [[g["command"][0], "-c", g["command"][2].replace("python3 -m dream_supervisor probe", "false ||")]
              for g in host]  # the image's probe tool is not on this machine: a probe that fails
    for argv in argvs:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            assert proc.poll() is None, argv  # still waiting
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 143, argv
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


DEPLOYMENTS = ["shop", "cl"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_every_rendering_validates(tmp_path: Path, deployment: str) -> None:
    files = _render(tmp_path, _project(tmp_path)[deployment])
    _validate(files)
    built = _kustomize(tmp_path, files)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == \
        sorted((o["kind"], o["metadata"]["name"]) for o in _objects(files))
    if deployment == "cl":
        assert {o["metadata"]["namespace"] for o in built} == {"shop-ns"}


def test_the_validator_is_awake() -> None:
    """Strict validation refuses an unknown field and a missing selector."""
    deployment: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S, strict=True)
    deployment["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    kubernetes_validate.validate(deployment, K8S, strict=True)
    deployment["spec"]["template"]["spec"]["restrat"] = "no"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S, strict=True)


def test_services_demo_db_app(tmp_path: Path) -> None:
    """The real recipe: Redis on a persistent volume, the app gated on Redis's own probe."""
    deployment = _real("services-demo", "db-app")
    target = _target(REPO, deployment, out=tmp_path / "k8s", options={})
    files = KubernetesRenderer().render(build_plan(deployment), target)
    objects = _objects(files)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("PersistentVolumeClaim", "db-app-vol-data-redis"), ("Service", "db-app-redis"),
        ("Deployment", "db-app-redis"), ("Deployment", "db-app-app")]
    redis = _pod(objects, "Deployment", "db-app-redis")
    assert redis["volumes"] == [{"name": "vol-data-redis",
                                 "persistentVolumeClaim": {"claimName": "db-app-vol-data-redis"}}]
    assert redis["containers"][0]["readinessProbe"]["exec"]["command"] == [
        *PROBE, "/etc/dream/services/db-app-redis.json"]
    assert redis["terminationGracePeriodSeconds"] == 12
    app = _pod(objects, "Deployment", "db-app-app")
    assert app["initContainers"] == [{
        "name": "wait-redis", "image": f"reg.example:5000/db-app-redis{DIGEST}", "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", "trap 'exit 143' TERM; until python3 -m dream_supervisor probe /etc/dream/services/db-app-redis.json; "
                                     "do sleep 0.1; done"],
        "volumeMounts": [{"name": "vol-data-redis", "mountPath": "/data/redis"}]}]  # redis's probe may look there
    assert app["volumes"] == [{"name": "vol-data-redis", "persistentVolumeClaim": {"claimName": "db-app-vol-data-redis"}}]
    assert app["containers"][0]["readinessProbe"] == {
        "httpGet": {"path": "/", "port": 5100, "host": "127.0.0.1", "scheme": "HTTP"},
        "initialDelaySeconds": 0, "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1,
        "failureThreshold": 30}
    assert "# - app: readiness period 0.2s → 1s (Kubernetes probes in whole seconds, period and timeout " \
           "at least 1)" in files[1].content
    _validate(files)
    _kustomize(tmp_path, files)


def test_gpu_image_notebook_gets_a_gpu(tmp_path: Path) -> None:
    deployment = _real("gpu-image", "gpu-image")
    assert deployment.services["notebook"].get("gpus") == 1
    target = _target(REPO, deployment, out=tmp_path / "k8s", options={"runtime_class": "nvidia"})
    files = KubernetesRenderer().render(build_plan(deployment), target)
    objects = _objects(files)
    notebook = _pod(objects, "Deployment", "gpu-image-notebook")
    assert notebook["runtimeClassName"] == "nvidia"
    assert notebook["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert "runtimeClassName" not in _pod(objects, "Deployment", "gpu-image-sshd")
    _validate(files)
    _kustomize(tmp_path, files)


def test_header_lists_what_kubernetes_cannot_express(tmp_path: Path) -> None:
    deployments = _project(tmp_path)
    files = _render(tmp_path, deployments["shop"])
    content = files[1].content
    header = content[:content.index("apiVersion:")].splitlines()
    assert header[0] == "# Deployment shop, rendered by dream (`doit render:kubernetes`); do not edit."
    assert all(line.startswith("# ") for line in header)
    assert "# Stop: kubectl delete deployment,job,service,configmap -l app.kubernetes.io/part-of=shop," \
           "app.kubernetes.io/managed-by=dream   (add pvc to drop the data)" in header
    notes = [line[4:] for line in header if line.startswith("# - ")]
    assert notes == [
        "a service that ends is restarted by the kubelet, a failed oneshot's Job gives up alone: the other "
        "pods run on (dream stops the whole deployment unless the service is allowed_to_exit)",
        "restart delays are the kubelet's (10s doubling to 5m, from 10s again after 10m of running; a Job's "
        "retries likewise), not backoff/max_backoff",
        "readiness probes go on after the first pass (dream stops probing then); a later failure takes the "
        "pod out of its Service",
        "the kubelet's liveness probes start with the container (after initial_delay), not from readiness "
        "on, and a failure restarts the whole container",
        "env files are ConfigMaps of the values read at render time (render again after a change); passed as "
        "the container's environment they rank below the deployment's env and PORT (dream ranks them above)",
        "network host: every pod on its node's network, so services reach each other on 127.0.0.1 only when "
        "all pods of the deployment run on one node",
        "vol-cache: not persistent in app, worker: an emptyDir of each pod, not shared with the other "
        "services that list it",
        "db: the kubelet restarts without limit (max_restarts 5 dropped)",
        "db: readiness initial_delay 2.5s → 3s, period 0.2s → 1s, timeout 1.5s → 2s (Kubernetes probes in "
        "whole seconds, period and timeout at least 1)",
        "db: the exec liveness probe runs as root in / with the image's environment, not as the service's "
        "user, in its working_dir, with its env",
        "migrate: a oneshot's Job retries a failure in a new pod, at most 3 times (restart on-failure, "
        "max_restarts 3)",
        "api: restart no is Always (a Deployment's only policy): the kubelet restarts it whenever it ends, "
        "exit 0 included",
        "app: restart on-failure is Always (a Deployment's only policy): the kubelet restarts it whenever it "
        "ends, exit 0 included",
        "app: its 2 replicas run in one container of one pod (replicas: 1; one probe, one restart for all)",
        "app: does not wait for migrate to complete (a pod cannot see a Job complete without API access; "
        "`doit run:kubernetes` waits for it with kubectl)",
        "app: the readinessProbe checks the first replica's PORT only",
        "worker: the kubelet restarts without limit (max_restarts 5 dropped)",
        "worker: does not wait for app to start (Kubernetes starts pods in no order)",
        "worker: gpus all requests no nvidia.com/gpu (a count); NVIDIA_VISIBLE_DEVICES=all shows it its "
        "node's GPUs where the NVIDIA runtime honours that variable",
        "worker: log_file logs/worker.log is written inside its container (kept only below a persistent "
        "volume); `kubectl logs` has the output",
        "once: does not wait for migrate to complete (a pod cannot see a Job complete without API access; "
        "`doit run:kubernetes` waits for it with kubectl)",
    ]
    cluster = _render(tmp_path, deployments["cl"])
    assert "# - network cluster: the model's 127.0.0.1 addresses do not carry over" in cluster[1].content
    assert "-n shop-ns -l" in cluster[1].content
    assert "network cluster" not in content
    assert files[0].content.startswith("# Deployment shop for kustomize, rendered by dream")


def test_healthy_without_readiness_is_started(tmp_path: Path) -> None:
    """The recipe refuses it, but a plan may say it (a plugin's): no gate, a header note."""
    deployment = _project(tmp_path, "services:\n  a: {command: x, readiness: {exec: 'true'}}\n"
                                    "  b: {command: x, depends_on: {a: healthy}}\n")["shop"]
    plan = build_plan(deployment)
    plan["services"][0]["readiness"] = None
    files = KubernetesRenderer().render(plan, _target(tmp_path, deployment))
    assert "initContainers" not in _pod(_objects(files), "Deployment", "shop-b")
    assert "# - b: a has no readiness probe, so healthy is started: no wait (Kubernetes starts pods in no " \
           "order)" in files[1].content


def test_a_shared_claim_and_an_exec_gate_are_noted(tmp_path: Path) -> None:
    deployment = _project(tmp_path, "services:\n"
                                    "  a: {command: x, volumes: [d], readiness: {exec: 'true'}}\n"
                                    "  b: {command: x, volumes: [d], depends_on: {a: healthy}}\n")["shop"]
    files = _render(tmp_path, deployment)
    content = files[1].content
    assert "# - shop-vol-d: one ReadWriteOnce claim mounted by a, b: their pods must run on one node" in content
    assert "# - b: wait-a runs a's exec probe in a's image inside b's pod: it sees a's network (host) and " \
           "persistent volumes, not its processes, nor the files of its other volumes (a fresh emptyDir)" in content
    gate = _pod(_objects(files), "Deployment", "shop-b")["initContainers"][0]
    assert gate["volumeMounts"] == [{"name": "vol-d", "mountPath": "/d"}]  # the probe may write there
    _validate(files)


def _kubelet_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of exec commands (third_party/forked/golang/expansion): ``$$`` is
    ``$``, ``$(VAR)`` the variable (left as is when unknown), any other ``$`` itself."""
    out, cursor = [], 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            after = text[cursor + 1]
            closing = text.find(")", cursor + 2) if after == "(" else -1
            if after == "$":
                out.append("$")
                cursor += 2
            elif closing != -1:
                name = text[cursor + 2:closing]
                out.append(env.get(name, f"$({name})"))
                cursor = closing + 1
            else:
                out.append("$" + after)
                cursor += 2
        else:
            out.append(text[cursor])
            cursor += 1
    return "".join(out)


@pytest.mark.parametrize("text,escaped", [
    ("$(HOME)", "$$(HOME)"), ("a$$b", "a$$$b"), ("${X:-1} $X $", "${X:-1} $X $"), ("$$(", "$$$$("),
    ("echo $$$(HOME)$", "echo $$$$$$(HOME)$"), ("plain", "plain"),
])
def test_literal_survives_kubelet_expansion(text: str, escaped: str) -> None:
    assert literal(text) == escaped
    assert _kubelet_expand(escaped, {"HOME": "/root", "X": "x"}) == text


def test_empty_options_mean_host_and_pushed(tmp_path: Path) -> None:
    objects = _objects(_render(tmp_path, _project(tmp_path)["cl"], options={}))
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")]
    assert all(p["hostNetwork"] and p["containers"][0]["imagePullPolicy"] == "IfNotPresent" for p in pods)
    assert all("namespace" not in o["metadata"] for o in objects)


def test_an_unpushed_image_is_one_line(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    images = {name: f"reg.example:5000/shop-{name}{DIGEST}" for name in deployment.services}
    assert _error(tmp_path, deployment, images={**images, "api": "shop-api:latest"}) == (
        "service api: image shop-api is not in a registry; run `doit push:shop-api` "
        "(or set kubernetes: {images: local} to use local tags)")
    del images["db"]
    assert _error(tmp_path, deployment, images=images).startswith("service db: image shop-db is not in a registry")


def test_a_missing_local_image_is_one_line(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["cl"]
    assert _error(tmp_path, deployment, images={"db": "cl-db:latest"}) == (
        "service migrate: no image to run it; run `doit render:images -d cl` first")


@pytest.mark.parametrize("text,message", [
    ("services:\n  db_:\n    command: x\n",
     "service db_: Kubernetes name 'shop-db-' is not a DNS-1123 label (at most 63 lowercase letters, "
     "digits and `-`, starting and ending with a letter or digit)"),
    (f"services:\n  {'s' * 60}:\n    command: x\n",
     f"service {'s' * 60}: Kubernetes name 'shop-{'s' * 60}' is not a DNS-1123 label (at most 63 lowercase "
     "letters, digits and `-`, starting and ending with a letter or digit)"),
    ("services:\n  a_b: {command: x}\n  a-b: {command: x}\n",
     "services a_b and a-b would both be the Kubernetes object shop-a-b; rename one"),
    ("services:\n  one:\n    command: x\n    volumes: [var/lib_db]\n",
     "service one: volume 'var/lib_db': Kubernetes name 'vol-var-lib_db' is not a DNS-1123 label (at most 63 "
     "lowercase letters, digits and `-`, starting and ending with a letter or digit)"),
    ("services:\n  one:\n    command: x\n    volumes: [a-b, a/b]\n",
     "volumes 'a-b' and 'a/b' would both be the Kubernetes volume vol-a-b; rename one"),
    ("services:\n  one:\n    command: x\n    env_files: [conf/a.env, conf/a-env]\n",
     "env files 'conf/a.env' and 'conf/a-env' would both be the ConfigMap shop-env-conf-a-env; rename one"),
], ids=["trailing-dash", "too-long", "collision", "volume-underscore", "volume-collision", "env-collision"])
def test_names_that_cannot_be(tmp_path: Path, text: str, message: str) -> None:
    deployment = _project(tmp_path, text)["shop"]
    env_files = {"conf/a.env": {"A": "1"}, "conf/a-env": {"A": "2"}}
    assert _error(tmp_path, deployment, env_files=env_files) == message


def test_an_env_variable_that_cannot_be_a_key(tmp_path: Path) -> None:
    deployment = _project(tmp_path, "services:\n  one:\n    command: x\n    env_files: [conf/base.env]\n")["shop"]
    assert _error(tmp_path, deployment, env_files={"conf/base.env": {"A B": "1"}}) == (
        "env file conf/base.env: variable 'A B' cannot be a ConfigMap key (letters, digits, `-`, `_` and `.` only)")


@pytest.mark.parametrize("readiness,message", [
    ("{exec: 'true'}",
     "service b: depends on a healthy, but its exec readiness cannot be probed from another pod in the cluster "
     "network; give a an http or tcp readiness, or use kubernetes: {network: host}"),
    ("{tcp: {port: 7000}}",
     "service b: depends on a healthy, but its readiness port 7000 is not one of its ports (its Service carries "
     "only those); add 7000 to a's ports"),
    ("{http: {path: /}}",
     "service b: depends on a healthy, but its readiness port 5000 is not one of its ports (its Service carries "
     "only those); add 5000 to a's ports"),
], ids=["exec", "tcp-port", "http-PORT"])
def test_cluster_gates_that_cannot_be(tmp_path: Path, readiness: str, message: str) -> None:
    deployment = _project(tmp_path, f"services:\n  a: {{command: x, ports: [6000], readiness: {readiness}}}\n"
                                    "  b: {command: x, depends_on: {a: healthy}}\n")["shop"]
    assert _error(tmp_path, deployment, options={"network": "cluster"}) == message
    _render(tmp_path, deployment, options={"network": "host"})  # on the host's network all of them work


@pytest.mark.parametrize("options,message", [
    ({"network": "bridge"}, "kubernetes network 'bridge': choose one of host, cluster"),
    ({"images": "docker"}, "kubernetes images 'docker': choose one of pushed, local"),
    ({"namespace": "My_NS"}, "kubernetes namespace: Kubernetes name 'My_NS' is not a DNS-1123 label (at most 63 "
                             "lowercase letters, digits and `-`, starting and ending with a letter or digit)"),
])
def test_unknown_settings_are_one_line(tmp_path: Path, options: dict[str, str], message: str) -> None:
    assert _error(tmp_path, _project(tmp_path)["shop"], options=options) == message


def test_repeatable(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    assert _render(tmp_path, deployment) == _render(tmp_path, deployment)
