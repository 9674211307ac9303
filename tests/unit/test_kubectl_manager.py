"""`run:kubernetes` (dream/managers/kubectl.py): the kubectl command lines it builds, in order,
and its one line when no cluster answers — with a fake runner, and with the real kubectl
pointed at a kubeconfig whose cluster does not exist."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.managers.kubectl import KubectlManager, selector
from tests.conftest import require

MANIFESTS = """\
# header
apiVersion: v1
kind: Service
metadata: {name: demo-redis, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo-redis, namespace: shop}
---
apiVersion: batch/v1
kind: Job
metadata: {name: demo-migrate, namespace: shop}
"""
PLAN = {"name": "demo", "services": []}


class FakeKubectl:
    """Answers `kubectl version` with a server (or not) and records every command."""

    def __init__(self, cluster: bool = True, failing: str = "") -> None:
        self.cluster, self.failing, self.asked, self.shown = cluster, failing, [], []

    def ask(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.asked.append(argv[1:])
        if argv[1:3] == ["config", "current-context"]:
            return subprocess.CompletedProcess(argv, 0, "kind-dev\n", "")
        if self.cluster:
            return subprocess.CompletedProcess(argv, 0, '{"serverVersion": {"gitVersion": "v1.30.2"}}', "")
        return subprocess.CompletedProcess(argv, 1, "", "E1201 memcache.go:265] couldn't get current server API "
                                           "group list\nThe connection to the server 10.0.0.9:6443 was refused - "
                                           "did you specify the right host or port?\n")

    def show(self, argv: list[str]) -> int:
        self.shown.append(argv[1:])
        return 1 if self.failing and self.failing in argv else 0


def manager(fake: FakeKubectl, **kwargs: bool) -> KubectlManager:
    return KubectlManager(ask=fake.ask, show=fake.show, which=lambda name: f"/usr/bin/{name}", **kwargs)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "demo.yaml").write_text(MANIFESTS)
    return tmp_path


def test_up_replaces_the_jobs_applies_the_set_then_waits_for_each_deployment_and_job(files: Path) -> None:
    fake = FakeKubectl()
    assert manager(fake).up(PLAN, files, files) == 0
    assert fake.asked[0][:3] == ["version", "-o", "json"]
    assert fake.shown == [
        ["delete", "job/demo-migrate", "-n", "shop", "--ignore-not-found", "--wait=true"],
        ["apply", "-k", str(files)],
        ["rollout", "status", "deployment/demo-redis", "-n", "shop", "--timeout=10m"],
        ["wait", "--for=condition=complete", "job/demo-migrate", "-n", "shop", "--timeout=10m"]]


def test_a_failed_rollout_is_the_exit_code_and_stops_the_waits(files: Path) -> None:
    fake = FakeKubectl(failing="deployment/demo-redis")
    assert manager(fake).up(PLAN, files, files) == 1
    assert [argv[0] for argv in fake.shown] == ["delete", "apply", "rollout"]


def test_down_deletes_by_label_and_keeps_claims_unless_asked(files: Path) -> None:
    fake = FakeKubectl()
    assert manager(fake).down(PLAN, files, files) == 0
    assert manager(fake, remove_volumes=True).down(PLAN, files, files) == 0
    kept, removed = fake.shown
    assert kept == ["delete", "deployment,job,service,configmap", "-l", selector("demo"), "-n", "shop",
                    "--ignore-not-found", "--wait=true"]
    assert removed[1] == "deployment,job,service,configmap,persistentvolumeclaim"
    assert selector("demo") == "app.kubernetes.io/part-of=demo,app.kubernetes.io/managed-by=dream"


def test_down_without_rendered_files_uses_the_context_namespace(tmp_path: Path) -> None:
    fake = FakeKubectl()
    assert manager(fake).down(PLAN, tmp_path / "absent", tmp_path) == 0
    assert "-n" not in fake.shown[0]


def test_no_cluster_is_one_line_naming_the_context_and_nothing_is_applied(files: Path) -> None:
    fake = FakeKubectl(cluster=False)
    with pytest.raises(DreamError) as raised:
        manager(fake).up(PLAN, files, files)
    assert str(raised.value) == ("kubectl: no Kubernetes cluster answers (context kind-dev): The connection "
                                 "to the server 10.0.0.9:6443 was refused - did you specify the right host or port?")
    assert fake.shown == []


def test_no_kubectl_is_one_line(files: Path) -> None:
    with pytest.raises(DreamError, match="kubectl is not installed; install Debian's kubernetes-client"):
        KubectlManager(which=lambda name: None).up(PLAN, files, files)


def test_the_real_kubectl_without_a_cluster_is_one_line(files: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig whose only cluster is a closed loopback port: the real kubectl fails, and
    dream says so in one line before applying anything."""
    require("kubectl")
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"
                      "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                      "contexts: [{name: nowhere, context: {cluster: c, user: u}}]\n"
                      "users: [{name: u, user: {token: t}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(DreamError) as raised:
        KubectlManager().up(PLAN, files, files)
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith("kubectl: no Kubernetes cluster answers (context nowhere): ")
    assert "127.0.0.1:9" in line, line
