"""The VM tasks of a deployment (``-d NAME``), wiring only (dream/vm/ does the work):

  lock:vm     pin the VM's own Debian packages (a kernel, systemd, …) over the image's, in
              recipes/<recipe>.vm.lock.json
  render:vm   the bootable disk, kernel and initramfs in the store, tagged <deployment>.vm:
              the image's layers, the VM's packages, the deployment's systemd units
  run:vm      boot it under QEMU here until Ctrl-C (then a clean poweroff)

The units are the systemd renderer's (dream/renderers/systemd.py) for the in-image plan: root
``/``, config files at ``/etc/dream/<deployment>/config``. The VM's settings are the
deployment's ``vm:`` mapping (dream/vm/spec.py).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from doit.exceptions import TaskFailed

from dream.errors import DreamError
from dream.recipe.model import Deployment, Recipe
from dream.tasks.params import DEPLOYMENT_PARAM, Check

if TYPE_CHECKING:
    from dream.store.layout import Store
    from dream.vm.build import BuiltVm
    from dream.vm.spec import VmSpec

PORT_OFFSET_PARAM = {"name": "port_offset", "long": "port-offset", "type": int, "default": 0,
                     "help": "forward each of the deployment's ports P to 127.0.0.1:P+N (when P is busy here)"}


class VmTasks:
    """``lock:vm``, ``render:vm`` and ``run:vm`` over the project's deployments."""

    def __init__(self, recipes: list[Recipe], root: Path, pick: Callable[[str], Deployment],
                 build_first: Callable[[Any, Deployment], None], chosen: Callable[[Any], Deployment]) -> None:
        self.recipes = {recipe.name: recipe for recipe in recipes}
        self.root, self.pick, self.build_first, self.chosen = root, pick, build_first, chosen

    # -- what the tasks share ----------------------------------------------------------------

    def recipe(self, deployment: Deployment) -> Recipe:
        recipe = self.recipes[deployment.recipe]
        if not any(layer.kind == "debian" for layer in recipe.layers):
            raise DreamError(f"deployment {deployment.name}: a VM boots its recipe's image, and {recipe.name} "
                             "has no Debian layer to boot (add one, e.g. imports: [debian-python])")
        return recipe

    def spec(self, deployment: Deployment) -> VmSpec:
        from dream.vm.spec import vm_spec
        try:
            return vm_spec(deployment.options.get("vm", {}))
        except DreamError as exc:
            raise DreamError(f"deployment {deployment.name}: {exc}", deployment.location) from None

    def image_entries(self, recipe: Recipe) -> list[dict[str, Any]]:
        """The lock entries of the image's Debian layers, in layer order."""
        from dream.lock import read_lock
        entries = read_lock(recipe)
        missing = [layer.name for layer in recipe.layers if layer.kind == "debian" and layer.name not in entries]
        if missing:
            raise DreamError(f"{recipe.lock_path.name}: layer {missing[0]} is not locked; run `doit lock:{recipe.name}`")
        return [entries[layer.name] for layer in recipe.layers if layer.kind == "debian"]

    def lock_path(self, recipe: Recipe) -> Path:
        from dream.vm.lockfile import vm_lock_path
        return vm_lock_path(recipe.lock_path)

    def units(self, deployment: Deployment) -> tuple[dict[str, Any], dict[str, str]]:
        """The in-image plan and the systemd files the disk holds (path → text)."""
        from dream.renderers.base import Target
        from dream.renderers.systemd import SystemdRenderer
        from dream.services.plan import build_plan
        from dream.vm.build import config_dir
        from dream.vm.system import ROOTFS
        plan = build_plan(deployment, in_image=True)
        target = Target(root=Path("/"), out=self.root / "build" / deployment.name / "vm",
                        options={"root": "/", "config_dir": config_dir(deployment.name), "scope": "system"})
        files = {file.path: file.content for file in SystemdRenderer().render(plan, target)}
        for service in plan["services"]:  # systemd reads them at each start, where the root has them
            for name in service["env_files"]:
                try:
                    files[ROOTFS + posixpath.normpath(name)] = (self.root / name).read_text()
                except (OSError, UnicodeDecodeError) as exc:
                    raise DreamError(f"service {service['name']}: env file {name}: cannot be read "
                                     f"({getattr(exc, 'strerror', None) or exc})") from None
        return plan, files

    def build(self, deployment: Deployment) -> tuple[Store, BuiltVm, VmSpec]:
        """The VM of ``deployment`` in the store (made unless its inputs' key names one)."""
        from dream.oci.descriptor import Descriptor
        from dream.registry.fetch import fetch_blob
        from dream.store import open_store
        from dream.vm.build import build_vm
        from dream.vm.lockfile import read_vm_lock, settings_hash
        recipe, spec = self.recipe(deployment), self.spec(deployment)
        packages = read_vm_lock(self.lock_path(recipe), deployment.name,
                                settings_hash(list(spec.packages), self.image_entries(recipe)))
        plan, units = self.units(deployment)
        store = open_store(fetch=fetch_blob)
        with store.lock("store", shared=True):
            image = store.tagged(recipe.name)
            if image is None:
                raise DreamError(f"no image {recipe.name!r} in the store; run `doit build:{recipe.name}`")
            for layer in store.read_manifest(image.digest)["layers"]:  # a base layer may still be remote
                store.local_blob(Descriptor.from_json(layer))
            built = build_vm(store, image, packages, units, plan, spec, deployment.name)
        return store, built, spec

    # -- the tasks ----------------------------------------------------------------------------

    def lock_task(self) -> dict[str, Any]:
        def lock(deployment: str) -> None:
            from dream.vm.lockfile import settings_hash, write_vm_lock
            from dream.vm.packages import lock_vm_packages, status_of_locked
            chosen = self.pick(deployment)
            recipe, spec = self.recipe(chosen), self.spec(chosen)
            entries = self.image_entries(recipe)
            first = entries[0]
            packages = lock_vm_packages(status_of_locked(entries), list(spec.packages),
                                        first["architecture"], first.get("suite"))
            path = self.lock_path(recipe)
            write_vm_lock(path, chosen.name, settings_hash(list(spec.packages), entries), packages)
            print(f"{path.name}: {chosen.name}: {len(packages['packages'])} packages over the image's")

        return {"basename": "lock:vm", "actions": [lock], "params": [DEPLOYMENT_PARAM], "verbosity": 2,
                "uptodate": [False],
                "doc": "pin a deployment's (-d NAME) VM packages (kernel, systemd, …) over its image's "
                       "Debian layers, in recipes/<recipe>.vm.lock.json"}

    def render_task(self) -> dict[str, Any]:
        def render(deployment: str) -> None:
            from dream.vm.build import describe
            store, built, _ = self.build(self.pick(deployment))
            print(describe(built))

        return {"basename": "render:vm", "actions": [render], "params": [DEPLOYMENT_PARAM], "verbosity": 2,
                "uptodate": [Check("never: a VM unchanged is not written again", self._build_first)],
                "doc": "build a deployment's (-d NAME) bootable VM disk into the store: its image's "
                       "layers, a kernel, systemd and the deployment's units (needs lock:vm)"}

    def run_task(self) -> dict[str, Any]:
        def run(deployment: str, port_offset: int) -> None | TaskFailed:
            import sys
            from dream.vm.run import run_vm
            chosen = self.pick(deployment)
            store, built, spec = self.build(chosen)
            sys.stdout.flush()
            code = run_vm(store, built, spec, self.root / ".dream" / "vm" / chosen.name, port_offset)
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: the VM's exit code {code}")

        return {"basename": "run:vm", "actions": [run], "params": [DEPLOYMENT_PARAM, PORT_OFFSET_PARAM],
                "verbosity": 2, "uptodate": [Check("never: it boots the VM", self._build_first)],
                "doc": "boot a deployment's (-d NAME) VM under QEMU here (KVM where it works, else TCG), "
                       "its ports forwarded to 127.0.0.1, until Ctrl-C; the data disk is .dream/vm/NAME/data.ext4"}

    def _build_first(self, task: Any) -> bool:
        self.build_first(task, self.chosen(task))
        return False

    def tasks(self) -> list[dict[str, Any]]:
        return [self.lock_task(), self.render_task(), self.run_task()]
