"""podman 4.3's variant of the Kubernetes manifests (dream.managers.podman `podman_variant`, pure)
on hand-written documents shaped as dream/renderers/kubernetes.py writes them and on the real
renderer's services-demo db-app; what the manager reads of it (pods, containers, volumes, log
times, a container's end); and the load's and ``down``'s podman commands, with fakes for podman.
(The real podman: tests/integration/test_podman_kube.py.)"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from dream.errors import DreamError
from dream.managers.podman import (VARIANT_FILE, Pod, PodmanKubeManager, claim_volumes, configmap_volumes,
                                   ended_for_good, load_into_podman, log_time, podman_variant, pods, variant_text)
from tests.unit.test_store import small_image

D = "shop"
LABELS = {"app.kubernetes.io/part-of": D, "app.kubernetes.io/managed-by": "dream"}


def service(name: str, restart: str = "on-failure", oneshot: bool = False,
            depends_on: dict[str, str] | None = None) -> dict[str, Any]:
    """The fields of a plan's service the variant reads."""
    return {"name": name, "restart": restart, "oneshot": oneshot, "depends_on": depends_on or {},
            "readiness": None}


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, **LABELS}


def container(name: str, ports: list[int] | None = None, liveness: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": f"{D}-{name}:latest", "imagePullPolicy": "Never"}
    if ports:
        out["ports"] = [{"containerPort": port, "protocol": "TCP"} for port in ports]
    out["readinessProbe"] = {"tcpSocket": {"port": (ports or [5000])[0], "host": "127.0.0.1"}, "periodSeconds": 1}
    if liveness:
        out["livenessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 10}
    return out


def pod_spec(name: str, gates: list[str] | None = None, host: bool = True, restart: str = "Always",
             **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if host:
        spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    spec.update(restartPolicy=restart, terminationGracePeriodSeconds=12)
    if gates:
        spec["initContainers"] = [{"name": f"wait-{dep}", "image": f"{D}-{dep}:latest", "imagePullPolicy": "Never",
                                   "command": ["/bin/sh", "-c", "until probe; do sleep 0.1; done"]} for dep in gates]
    spec["containers"] = [container(name, **more)]
    return spec


def deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{D}-{name}", "labels": labels(name)},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "template": {"metadata": {"labels": labels(name)}, "spec": pod_spec(name, **spec)}}}


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{D}-{name}", "namespace": "dev", "labels": labels(name)},
            "spec": {"backoffLimit": 0,
                     "template": {"metadata": {"labels": labels(name)}, "spec": pod_spec(name, restart="Never", **spec)}}}


CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{D}-env-conf-base-env", "labels": LABELS},
              "data": {"A": "1"}}
CLAIM = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"{D}-vol-var-lib-db", "labels": LABELS},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{D}-db", "labels": labels("db")},
           "spec": {"selector": {"app.kubernetes.io/name": "db"}, "ports": [{"name": "p6379", "port": 6379}]}}


def shop() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """db (a claim, ports, liveness), migrate (a oneshot gated on db), app (gated on db)."""
    db = deployment("db", ports=[6379], liveness=True)
    db["spec"]["template"]["spec"]["volumes"] = [{"name": "vol-var-lib-db",
                                                  "persistentVolumeClaim": {"claimName": f"{D}-vol-var-lib-db"}}]
    documents = [CONFIG_MAP, CLAIM, SERVICE, db, job("migrate", gates=["db"]),
                 deployment("app", gates=["db"], ports=[8080])]
    plan = {"name": D, "services": [service("db", restart="always"), service("migrate", oneshot=True, restart="on-failure",
                                                                               depends_on={"db": "healthy"}),
                                    service("app", depends_on={"db": "healthy", "migrate": "completed_successfully"})]}
    return documents, plan


def kinds(documents: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in documents]


def spec_of(document: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = document["spec"] if document["kind"] == "Pod" else document["spec"]["template"]["spec"]
    return spec


def test_claims_go_jobs_become_pods_and_the_rest_keeps_its_order() -> None:
    documents, plan = shop()
    variant = podman_variant(documents, plan)
    assert kinds(variant) == [("ConfigMap", "shop-env-conf-base-env"), ("Service", "shop-db"),
                              ("Deployment", "shop-db"), ("Pod", "shop-migrate"), ("Deployment", "shop-app")]
    assert variant[0] == CONFIG_MAP and variant[1] == SERVICE


def test_a_job_is_the_pod_of_its_template() -> None:
    documents, plan = shop()
    migrate = next(d for d in podman_variant(documents, plan) if d["kind"] == "Pod")
    template = documents[4]["spec"]["template"]
    assert migrate["apiVersion"] == "v1"
    assert migrate["metadata"] == {"name": "shop-migrate", "namespace": "dev", "labels": labels("migrate")}
    assert migrate["spec"]["initContainers"] == template["spec"]["initContainers"]
    assert migrate["spec"]["restartPolicy"] == "Never"  # a oneshot: never again, gates or not
    assert "backoffLimit" not in json.dumps(migrate)


@pytest.mark.parametrize(("restart", "oneshot", "gated", "policy"), [
    ("no", False, False, "Never"), ("no", False, True, "Never"),
    ("on-failure", False, False, "OnFailure"), ("on-failure", False, True, "OnFailure"),
    ("always", False, False, "Always"),
    ("always", False, True, "OnFailure"),  # podman 4.3 restarts a finished init container under Always
    ("on-failure", True, True, "Never"), ("always", True, False, "Never"),
])
def test_each_pod_restarts_as_its_service_says(restart: str, oneshot: bool, gated: bool, policy: str) -> None:
    documents = [deployment("db"), deployment("app", gates=["db"] if gated else None)]
    plan = {"name": D, "services": [service("db"), service("app", restart=restart, oneshot=oneshot)]}
    assert spec_of(podman_variant(documents, plan)[1])["restartPolicy"] == policy


def test_a_workload_the_plan_does_not_name_keeps_its_policy_but_never_always_with_gates() -> None:
    documents = [deployment("x"), deployment("y", gates=["x"]), deployment("z", restart="Never", gates=["x"])]
    variant = podman_variant(documents, {"name": D, "services": []})
    assert [spec_of(d)["restartPolicy"] for d in variant] == ["Always", "OnFailure", "Never"]


def test_host_network_containers_list_no_ports_and_no_container_has_a_liveness_probe() -> None:
    documents, plan = shop()
    variant = podman_variant(documents, plan)
    for document in variant[2:]:
        for each in [*spec_of(document).get("initContainers", []), *spec_of(document)["containers"]]:
            assert "ports" not in each and "livenessProbe" not in each
    assert spec_of(variant[2])["containers"][0]["readinessProbe"] == container("db", [6379])["readinessProbe"]
    cluster = podman_variant([deployment("db", host=False, ports=[6379], liveness=True)], plan)
    assert spec_of(cluster[0])["containers"][0]["ports"] == [{"containerPort": 6379, "protocol": "TCP"}]
    assert "livenessProbe" not in spec_of(cluster[0])["containers"][0]


def test_the_variant_is_pure() -> None:
    documents, plan = shop()
    before = copy.deepcopy(documents)
    first = podman_variant(documents, plan)
    assert documents == before
    assert podman_variant(documents, plan) == first
    assert podman_variant([None, *documents], plan) == first  # an empty document (`---` at the end)


def test_a_dependency_plays_before_its_dependents_whatever_the_plan_order() -> None:
    documents, plan = shop()
    plan["services"] = [plan["services"][2], plan["services"][1], plan["services"][0]]  # app, migrate, db
    workloads = [d for d in podman_variant(list(reversed(documents)), plan) if d["kind"] in ("Deployment", "Pod")]
    assert [d["metadata"]["name"] for d in workloads] == ["shop-db", "shop-migrate", "shop-app"]
    independent = {"name": D, "services": [service("b"), service("a"), service("c", depends_on={"a": "started"})]}
    played = podman_variant([deployment("c"), deployment("b"), deployment("a")], independent)
    assert [d["metadata"]["name"] for d in played] == ["shop-b", "shop-a", "shop-c"]  # else as given
    ring = {"name": D, "services": [service("a", depends_on={"b": "healthy"}), service("b", depends_on={"a": "healthy"})]}
    assert [d["metadata"]["name"] for d in podman_variant([deployment("a"), deployment("b")], ring)] == ["shop-a", "shop-b"]


def test_the_pods_podman_makes_and_their_containers() -> None:
    documents, plan = shop()
    assert pods(podman_variant(documents, plan)) == [
        Pod("shop-db-pod-0", "db", ("shop-db-pod-0-db",), 12),
        Pod("shop-migrate", "migrate", ("shop-migrate-migrate",), 12, ("shop-migrate-wait-db",)),
        Pod("shop-app-pod-0", "app", ("shop-app-pod-0-app",), 12, ("shop-app-pod-0-wait-db",))]


def test_the_volumes_podman_makes() -> None:
    documents, plan = shop()
    variant = podman_variant(documents, plan)
    assert claim_volumes(variant) == claim_volumes(documents) == ["shop-vol-var-lib-db"]
    assert configmap_volumes(variant) == []  # env files are envFrom: podman makes no volume of them
    mounted = deployment("app")
    mounted["spec"]["template"]["spec"]["volumes"] = [{"name": "conf", "configMap": {"name": "shop-env-x"}},
                                                      {"name": "scratch", "emptyDir": {}}]
    assert configmap_volumes([mounted, job("x")]) == ["shop-env-x"]


def test_the_variant_file_reads_back_as_its_documents() -> None:
    documents, plan = shop()
    variant = podman_variant(documents, plan)
    text = variant_text(variant, "shop.yaml")
    assert text.startswith("# podman 4.3's variant of shop.yaml")
    assert list(yaml.safe_load_all(text)) == variant


def test_log_times_compare_as_instants() -> None:
    assert log_time("2026-12-01T21:14:32.221903361Z") == (1796159672, 221903361)
    assert log_time("2026-12-01T21:14:32.2Z") == (1796159672, 200000000)  # trailing zeros dropped
    assert log_time("2026-12-01T21:14:32Z") == (1796159672, 0)
    assert log_time("2026-12-01T22:14:32.5+01:00") == (1796159672, 500000000)
    assert log_time("2026-12-01T21:14:32.3Z") > log_time("2026-12-01T21:14:32.221903361Z")  # type: ignore[operator]
    assert log_time("Error:") is None and log_time("") is None


def state(status: str, code: int = 0, policy: str = "") -> dict[str, Any]:
    return {"State": {"Status": status, "ExitCode": code}, "HostConfig": {"RestartPolicy": {"Name": policy}}}


@pytest.mark.parametrize(("seen", "ended"), [
    (None, True), (state("running"), False), (state("created"), False),
    (state("exited", 0, "no"), True), (state("exited", 1, ""), True),
    (state("exited", 0, "on-failure"), True), (state("exited", 2, "on-failure"), False),
    (state("exited", 0, "always"), False), (state("stopped", 0, "no"), True),
])
def test_a_container_ends_for_good_when_its_policy_will_not_start_it_again(seen: dict[str, Any] | None,
                                                                            ended: bool) -> None:
    assert ended_for_good(seen) is ended


def test_the_real_renderers_db_app_becomes_podmans() -> None:
    from dream.recipe.load import load_recipe
    from dream.renderers.base import Target
    from dream.renderers.kubernetes import KubernetesRenderer
    from dream.services.plan import build_plan
    from tests.conftest import REPO

    chosen = load_recipe(REPO / "recipes" / "services-demo.yaml", REPO).deployments["db-app"]
    plan = build_plan(chosen)
    target = Target(REPO, REPO / "build" / "db-app" / "podman-kube", options={"images": "local"},
                    images={name: f"db-app-{name}:latest" for name in chosen.services})
    files = {f.path: f.content for f in KubernetesRenderer().render(plan, target)}
    variant = podman_variant(list(yaml.safe_load_all(files["db-app.yaml"])), plan)
    assert [d["kind"] for d in variant] == ["Service", "Deployment", "Deployment"]
    redis, app = spec_of(variant[1]), spec_of(variant[2])
    assert (redis["restartPolicy"], app["restartPolicy"]) == ("OnFailure", "OnFailure")
    assert [c["name"] for c in app["initContainers"]] == ["wait-redis"]
    assert "ports" not in redis["containers"][0]
    assert [c["image"] for c in [*app["initContainers"], *app["containers"]]] == ["db-app-redis:latest", "db-app-app:latest"]
    assert pods(variant) == [Pod("db-app-redis-pod-0", "redis", ("db-app-redis-pod-0-redis",), 12),
                             Pod("db-app-app-pod-0", "app", ("db-app-app-pod-0-app",), 12, ("db-app-app-pod-0-wait-redis",))]
    assert claim_volumes(variant) == ["db-app-vol-data-redis"]


# -- podman's commands, with fakes ------------------------------------------------------------

def completed(argv: list[str], code: int = 0, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


def test_the_load_pulls_from_the_store_on_loopback_then_tags_and_untags(tmp_path: Path) -> None:
    store, layer, manifest = small_image(tmp_path / "s")
    config = store.read_manifest(manifest.digest)["config"]
    calls: list[list[str]] = []

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if argv[1] == "pull":  # what podman does: the manifest, then the blobs it lacks
            match = re.fullmatch(r"(127\.0\.0\.1:\d+)/(.+)@(sha256:[0-9a-f]{64})", argv[-1])
            assert match, argv
            host, name, digest = match.groups()
            request = urllib.request.Request(f"http://{host}/v2/{name}/manifests/{digest}",
                                             headers={"Accept": manifest.mediaType})
            body = json.loads(urllib.request.urlopen(request).read())
            for blob in [body["config"], *body["layers"]]:
                urllib.request.urlopen(f"http://{host}/v2/{name}/blobs/{blob['digest']}").read()
        return completed(argv)

    loaded = load_into_podman(store, manifest, "x", ["1", "latest"], run=run, which=lambda tool: "/usr/bin/podman")
    reference = calls[0][-1]
    image_id = config["digest"].split(":")[1]
    assert calls == [["/usr/bin/podman", "pull", "--quiet", "--tls-verify=false", reference],
                     ["/usr/bin/podman", "tag", image_id, "localhost/x:1"],
                     ["/usr/bin/podman", "tag", image_id, "localhost/x:latest"],
                     ["/usr/bin/podman", "untag", image_id, reference]]
    assert reference.endswith(f"/x@{manifest.digest}")
    assert (loaded.tags, loaded.via, loaded.layers, loaded.layers_sent) == (["localhost/x:1", "localhost/x:latest"],
                                                                             "registry", 1, 1)
    assert loaded.bytes_sent == layer.size + config["size"]


def test_a_failing_load_is_one_line_and_the_temporary_name_goes(tmp_path: Path) -> None:
    store, _, manifest = small_image(tmp_path / "s")
    podman = {"which": lambda tool: "/usr/bin/podman"}
    with pytest.raises(DreamError, match=r"^podman pull from the store failed: Error: initializing source x: boom$"):
        load_into_podman(store, manifest, "x", ["latest"], run=lambda argv: completed(
            argv, 125, stderr="Trying to pull...\nError: initializing source x: boom\n"), **podman)
    calls: list[list[str]] = []

    def tag_fails(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return completed(argv, 125 if argv[1] == "tag" else 0, stderr="Error: no space\n")

    with pytest.raises(DreamError, match=r"^podman tag localhost/x:latest failed: Error: no space$"):
        load_into_podman(store, manifest, "x", ["latest"], run=tag_fails, **podman)
    assert calls[-1][1] == "untag"


def test_without_podman_one_line_says_how_to_install_it(tmp_path: Path) -> None:
    store, _, manifest = small_image(tmp_path / "s")
    absent = {"which": lambda tool: None}
    with pytest.raises(DreamError, match=r"apt-get install podman catatonit"):
        load_into_podman(store, manifest, "x", ["latest"], **absent)
    with pytest.raises(DreamError, match=r"apt-get install podman catatonit"):
        PodmanKubeManager(**absent).up(shop()[1], tmp_path, tmp_path)  # before reading or loading anything


def test_up_without_manifests_is_one_line(tmp_path: Path) -> None:
    manager = PodmanKubeManager(which=lambda tool: "/usr/bin/podman")
    with pytest.raises(DreamError, match="needs the rendered manifests"):
        manager.up(shop()[1], None, tmp_path)
    with pytest.raises(DreamError, match=r"^cannot read the manifests .*shop\.yaml: No such file"):
        manager.up(shop()[1], tmp_path, tmp_path)


@pytest.mark.parametrize("remove_volumes", [False, True])
def test_down_stops_and_removes_dependents_first_within_their_grace(tmp_path: Path, remove_volumes: bool) -> None:
    documents, plan = shop()
    mounted = documents[5]["spec"]["template"]["spec"]
    mounted["volumes"] = [{"name": "conf", "configMap": {"name": "shop-env-x"}}]
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump_all(documents))
    commands: list[list[str]] = []

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        commands.append(argv[1:])
        missing = argv[1:3] == ["pod", "exists"] and argv[3] == "shop-migrate"  # a oneshot's pod already gone
        return completed(argv, 1 if missing else 0)

    def popen(argv: list[str], **options: Any) -> subprocess.Popen[Any]:
        commands.append(argv[1:])
        return subprocess.Popen(["true"], **options)

    manager = PodmanKubeManager(remove_volumes=remove_volumes, popen=popen, run=run, which=lambda tool: "/usr/bin/podman")
    assert manager.down(plan, tmp_path, tmp_path) == 0
    assert commands == [
        ["pod", "exists", "shop-app-pod-0"], ["pod", "stop", "-t", "12", "shop-app-pod-0"],
        ["pod", "rm", "--force", "shop-app-pod-0"],
        ["pod", "exists", "shop-migrate"],  # a pod missing (a failed play) is no reason to leave the others
        ["pod", "exists", "shop-db-pod-0"], ["pod", "stop", "-t", "12", "shop-db-pod-0"],
        ["pod", "rm", "--force", "shop-db-pod-0"],
        ["volume", "exists", "shop-env-x"], ["volume", "rm", "shop-env-x"],
        *([["volume", "exists", "shop-vol-var-lib-db"], ["volume", "rm", "shop-vol-var-lib-db"]] if remove_volumes else [])]
    assert list(yaml.safe_load_all((tmp_path / VARIANT_FILE).read_text())) == podman_variant(documents, plan)


def test_podmans_error_is_its_last_error_line() -> None:
    from dream.managers.podman import last_line
    assert last_line('Error: encountered while bringing up pod x: boom\ntime="…" level=error msg="Removing container"\n') \
        == "Error: encountered while bringing up pod x: boom"
    assert last_line("Trying to pull...\n  writing manifest\n\n") == "writing manifest"
    assert last_line("") == "no output"
