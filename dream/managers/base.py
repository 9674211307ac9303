"""The two interfaces of the outer layer: a `Manager` runs a deployment, a `Publisher` sends an
image somewhere.

They exist so that adding a way to run services (honcho on a rendered Procfile, Docker Compose,
kubectl, systemd) or a place to send an image (a registry, the Docker engine, a tarball) is a new
class, not an edit of the tasks: the tasks (dream/tasks/services.py, dream/tasks/__init__.py) pick one
by name and call it; they hold no knowledge of how it runs or publishes.

- A new manager goes into ``dream/managers/<name>.py`` (dream's own supervisor on this host is
  `dream.managers.host.HostManager`, Docker Compose `dream.managers.compose.ComposeManager`), or
  into a package of its own as a plugin (dream/managers/plugins.py). When it runs files a
  renderer produced, ``renders`` names that renderer (dream/renderers/): the task renders,
  writes the files, then calls ``up``.
- A new publisher goes next to what it talks to: the registry's in dream/registry/, the Docker
  engine's with its client. They satisfy `Publisher` by shape and need not import this module
  (the registry sits below the managers); the task that picks one annotates it as `Publisher`,
  so mypy checks the fit.

Managers sit above renderers, the services plan, the supervisor, the store and the registry, and
may import them; nothing below imports a manager.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dream.renderers.base import Plan

if TYPE_CHECKING:
    from dream.oci.descriptor import Descriptor
    from dream.store.layout import Store


class Manager(Protocol):
    """Runs one deployment's plan (dream/services/plan.py) with its root as the working tree."""

    name: str
    """"host" (dream's supervisor here; its task is ``doit run:procfile``), "compose", later
    "kubectl", "systemd"; a plugin's task is named by its declaration (``run:<name>``)."""

    renders: str | None
    """The renderer whose files ``up`` runs (a key of ``RENDERERS``, or a plugin renderer's
    name); None: it runs the plan."""

    def up(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Start the deployment: block until it ends (the host) or return once it is applied.
        ``files`` is the folder the ``renders`` renderer's files were written to (None when
        ``renders`` is None). The exit code: 0 is success."""
        ...

    def down(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Take down what ``up`` started and left behind (compose's containers and network;
        its named volumes stay unless the manager was asked to remove them). A manager whose
        processes end with ``up`` (the host supervisor) has nothing to do: 0."""
        ...


class Publisher(Protocol):
    """Sends an image from the store somewhere (a registry repository, the Docker engine)."""

    def publish(self, store: Store, manifest: Descriptor, tags: list[str]) -> str:
        """Publish the image whose manifest is ``manifest`` under ``tags``; one summary line,
        or a `DreamError`."""
        ...
