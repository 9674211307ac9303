"""Docker Compose runs a deployment: ``doit run:compose`` (Debian's ``docker-compose``).

``up`` loads each service's image (``render:images``, dream/managers/images.py) into the Docker
engine, then runs ``docker-compose -p <deployment> -f <files>/compose.yaml up --remove-orphans``
in the foreground, its logs streaming with compose's own service prefixes, until every container
ended or Ctrl-C. Whichever comes first, ``down`` follows: the containers and the network go, the
named volumes stay (``remove_volumes`` adds ``-v``), so a second run finds its data.

Compose runs in a process group of its own, so one Ctrl-C reaches it exactly once, from here
(``SIGINT``, or ``SIGTERM`` or ``SIGHUP`` to dream: compose stops the containers gracefully, each within its
``stop_grace_period``); a second Ctrl-C forwards a second ``SIGINT``, compose's own "kill now".
The exit code is compose's; after Ctrl-C it is ``down``'s (0 when everything was taken down).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dream.errors import DreamError
from dream.managers.interrupts import signals_as_interrupt, through_interrupts
from dream.renderers.base import Plan
from dream.services.per_service import image_tag

if TYPE_CHECKING:
    from dream.engine import Loaded
    from dream.oci.descriptor import Descriptor
    from dream.store.layout import Store

COMPOSE = "docker-compose"
COMPOSE_FILE = "compose.yaml"
IMAGE_TAG = "latest"  # what dream/managers/images.py's service_references name

Popen = Callable[[list[str]], "subprocess.Popen[Any]"]
Load = Callable[["Store", "Descriptor", str, list[str]], "Loaded"]


def _own_group(argv: list[str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(argv, process_group=0)


class ComposeManager:
    """A deployment's ``compose.yaml`` (dream/renderers/compose.py) under ``docker-compose``.

    ``store`` and ``images`` (service → manifest) are the per-service images ``up`` loads
    first; ``popen`` starts a command (tests pass a fake), ``load`` is `dream.engine.load`."""

    name = "compose"
    renders: str | None = "compose"

    def __init__(self, store: Store | None = None, images: Mapping[str, Descriptor] | None = None,
                 remove_volumes: bool = False, popen: Popen = _own_group, load: Load | None = None,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.store, self.images, self.remove_volumes = store, dict(images or {}), remove_volumes
        self.popen, self.load, self.which = popen, load, which

    def command(self, plan: Plan, files: Path | None, *verb: str) -> list[str]:
        """``docker-compose -p <deployment> -f <files>/compose.yaml <verb…>``."""
        if files is None:
            raise DreamError("run:compose needs the rendered compose.yaml (render:compose)")
        return [self.executable(), "-p", plan["name"], "-f", str(files / COMPOSE_FILE), *verb]

    def up(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Load the images, run compose in the foreground, take it down; the exit code."""
        argv = self.command(plan, files, "up", "--remove-orphans")  # no docker-compose: before any load
        self.load_images(plan["name"])
        sys.stdout.flush()
        interrupted, code = False, 1
        with signals_as_interrupt():
            process = self.popen(argv)
            try:
                while True:
                    try:
                        code = process.wait()
                        break
                    except KeyboardInterrupt:
                        interrupted = True
                        print(f"\ndream: stopping {plan['name']} (docker-compose stops each container "
                              "within its grace period; Ctrl-C again kills them)", file=sys.stderr, flush=True)
                        process.send_signal(signal.SIGINT)
            finally:  # whatever ended the wait (a Ctrl-C while printing, too): compose stops, then down
                if process.poll() is None:
                    interrupted = True
                    process.send_signal(signal.SIGINT)
                    through_interrupts(process.wait)
                down = self.down(plan, files, root)
        return down if interrupted else (code or down)

    def down(self, plan: Plan, files: Path | None, root: Path) -> int:
        """``docker-compose … down`` (``-v`` with ``remove_volumes``); it is let finish even
        through Ctrl-C, which would leave containers behind."""
        process = self.popen(self.command(plan, files, "down", *(["-v"] if self.remove_volumes else [])))
        return through_interrupts(process.wait)

    def load_images(self, deployment: str) -> None:
        """Each per-service image into the engine as ``<deployment>-<service>:latest``, each blob
        fetched first where only a registry holds it (a base image's layers); the engine takes
        only the layers it lacks."""
        if not self.images:
            return
        assert self.store is not None, "images without the store that holds them"
        from dream.oci.descriptor import Descriptor
        from dream.engine import load as engine_load
        store, load = self.store, self.load or engine_load
        with store.lock("store", shared=True):
            for service, manifest in self.images.items():
                body = store.read_manifest(manifest.digest)
                for blob in [body["config"], *body["layers"]]:
                    store.local_blob(Descriptor.from_json(blob))
                print(load(store, manifest, image_tag(deployment, service), [IMAGE_TAG]), flush=True)

    def executable(self) -> str:
        """docker-compose's path, or the one line that says how to get it."""
        found = self.which(COMPOSE)
        if found is None:
            raise DreamError(f"{COMPOSE} is not installed; install Debian's docker-compose "
                             "(apt-get install docker-compose) to run a deployment with run:compose")
        return found
