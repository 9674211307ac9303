"""A deployment on a real Kubernetes cluster: ``doit run:kubernetes`` (``kubectl`` against the
user's current context).

``up`` asks the cluster for its version first (so "no cluster answers" is one line, not a
stack of kubectl's retries), deletes the deployment's Jobs (a Job's pod template cannot be
changed, and one that finished would not run again), then ``kubectl apply -k
build/<deployment>/kubernetes``, then waits
with kubectl's own progress: ``rollout status`` for each Deployment, ``wait
--for=condition=complete`` for each Job, and returns once all are ready (a cluster runs the
deployment on its own; nothing here stays in the foreground). ``down`` (``doit run:kubernetes
--down``) deletes what dream applied, by the labels every rendered object carries
(``app.kubernetes.io/part-of=<deployment>,app.kubernetes.io/managed-by=dream``); the
PersistentVolumeClaims, which hold the data, only with ``--volumes``.

The images are the per-service images by digest, from the registry ``doit
push:<deployment>-<service>`` sent them to: the cluster pulls them itself.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import yaml

from dream.errors import DreamError
from dream.renderers.base import Plan
from dream.renderers.kubernetes import KINDS, selector

KUBECTL = "kubectl"
ROLLOUT_TIMEOUT = "10m"  # kubectl's --timeout: a pull of a 7 GB image on a slow node fits
ASK_TIMEOUT = "10s"  # --request-timeout of the first question, the cluster's version

Run = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run_captured(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True)


def _run_shown(argv: list[str]) -> int:
    return subprocess.run(argv).returncode


def last_line(text: str) -> str:
    """kubectl's last non-empty line: its error, without the retries before it."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class KubectlManager:
    """The rendered set (dream/renderers/kubernetes.py) applied with ``kubectl``.

    ``ask`` runs a command and captures its output (the version check, the context's name),
    ``show`` runs one with its output on the terminal (apply, rollout status, delete); tests
    pass fakes, and a real kubectl with no cluster."""

    name = "kubernetes"
    renders: str | None = "kubernetes"

    def __init__(self, remove_volumes: bool = False, ask: Run = _run_captured,
                 show: Callable[[list[str]], int] = _run_shown,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.remove_volumes, self.ask, self.show, self.which = remove_volumes, ask, show, which

    def executable(self) -> str:
        found = self.which(KUBECTL)
        if found is None:
            raise DreamError(f"{KUBECTL} is not installed; install Debian's kubernetes-client "
                             "(apt-get install kubernetes-client) to run a deployment with run:kubernetes")
        return found

    def check_cluster(self) -> None:
        """One line when no cluster answers the current context (or none is set)."""
        kubectl = self.executable()
        answer = self.ask([kubectl, "version", "-o", "json", f"--request-timeout={ASK_TIMEOUT}"])
        if answer.returncode == 0 and "serverVersion" in answer.stdout:
            return
        context = self.ask([kubectl, "config", "current-context"])
        where = f"context {context.stdout.strip()}" if context.returncode == 0 else "no current context"
        raise DreamError(f"kubectl: no Kubernetes cluster answers ({where}): {last_line(answer.stderr)}")

    def up(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Apply the set, then wait for every Deployment's rollout and every Job; the exit code."""
        objects = rendered_objects(plan, files)
        self.check_cluster()
        kubectl = self.executable()
        for kind, name, namespace in objects:  # a Job's pod template cannot change, and a Job
            if kind == "Job":                  # that finished would not run again: a new one
                code = self.show([kubectl, "delete", f"job/{name}", *namespace, "--ignore-not-found", "--wait=true"])
                if code:
                    return code
        code = self.show([kubectl, "apply", "-k", str(files)])
        if code:
            return code
        for kind, name, namespace in objects:
            if kind == "Deployment":
                code = self.show([kubectl, "rollout", "status", f"deployment/{name}", *namespace,
                                  f"--timeout={ROLLOUT_TIMEOUT}"])
            elif kind == "Job":
                code = self.show([kubectl, "wait", "--for=condition=complete", f"job/{name}", *namespace,
                                  f"--timeout={ROLLOUT_TIMEOUT}"])
            if code:
                return code
        return 0

    def down(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Delete every object of the deployment that dream applied (PVCs with ``remove_volumes``),
        in the namespaces of the rendered files (none rendered: the context's namespace)."""
        self.check_cluster()
        kinds = ",".join([*KINDS, *(["persistentvolumeclaim"] if self.remove_volumes else [])])
        rendered = files is not None and (files / f"{plan['name']}.yaml").is_file()
        namespaces = {tuple(namespace) for _, _, namespace in rendered_objects(plan, files)} if rendered else set()
        code = 0
        for namespace in sorted(namespaces) or [()]:
            code = code or self.show([self.executable(), "delete", kinds, "-l", selector(plan["name"]),
                                      *namespace, "--ignore-not-found", "--wait=true"])
        return code


def rendered_objects(plan: Plan, files: Path | None) -> list[tuple[str, str, list[str]]]:
    """(kind, name, ``["-n", namespace]`` or ``[]``) of each object in the rendered
    ``<deployment>.yaml``."""
    if files is None:
        raise DreamError("run:kubernetes needs the rendered manifests (render:kubernetes)")
    path = files / f"{plan['name']}.yaml"
    try:
        documents: list[Any] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise DreamError(f"{path}: cannot read the rendered manifests: {exc}") from None
    found = []
    for document in documents:
        meta = document.get("metadata", {})
        namespace = ["-n", meta["namespace"]] if meta.get("namespace") else []
        found.append((str(document.get("kind")), str(meta.get("name")), namespace))
    return found
