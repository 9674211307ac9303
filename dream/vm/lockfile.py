"""``recipes/<recipe>.vm.lock.json``: the VM's own Debian packages pinned, per deployment.

A file of its own beside the recipe's lock, because the VM's packages are resolved over the
image's (dream/vm/packages.py): they depend on the image's Debian pins, and locking an image
must not cost an apt resolution for every deployment that may never boot a VM. Each entry keeps
the hash of what it was resolved from (the packages asked for and the image's Debian lock
entries), so a changed image or package list is refused with the command that fixes it, as a
stale layer entry is (dream/lock.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dream.errors import DreamError
from dream.oci.digest import canonical_json

LOCK_VERSION = 1


def vm_lock_path(recipe_lock: Path) -> Path:
    """``recipes/<recipe>.vm.lock.json`` beside ``recipes/<recipe>.lock.json``."""
    return recipe_lock.with_name(recipe_lock.name.removesuffix(".lock.json") + ".vm.lock.json")


def settings_hash(packages: list[str], image_entries: list[dict[str, Any]]) -> str:
    """What a VM lock entry is resolved from: the packages asked for, the image's Debian pins."""
    value = {"packages": packages, "image": image_entries}
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("lockVersion") != LOCK_VERSION:
            raise ValueError(f"lockVersion {data.get('lockVersion')!r}, expected {LOCK_VERSION}")
        return dict(data["deployments"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DreamError(f"{path.name}: unreadable VM lock ({exc}); remove it and lock again") from None


def read_vm_lock(path: Path, deployment: str, wanted: str) -> dict[str, Any]:
    """The packages entry of ``deployment``; a `DreamError` naming ``doit lock:vm`` when it is
    missing or was resolved from other settings."""
    entry = _read(path).get(deployment)
    fix = f"run `doit lock:vm -d {deployment}`"
    if entry is None:
        raise DreamError(f"{path.name}: the VM of deployment {deployment} is not locked; {fix}")
    if entry.get("settings") != wanted:
        raise DreamError(f"{path.name}: the VM lock of deployment {deployment} is stale (its packages or the "
                         f"image's Debian layers changed); {fix}")
    packages: dict[str, Any] = entry["packages"]
    return packages


def write_vm_lock(path: Path, deployment: str, settings: str, packages: dict[str, Any]) -> None:
    """Set ``deployment``'s entry, keeping the others; written whole through a temporary file."""
    deployments = _read(path)
    deployments[deployment] = {"settings": settings, "packages": packages}
    text = json.dumps({"lockVersion": LOCK_VERSION, "deployments": dict(sorted(deployments.items()))},
                      indent=1, sort_keys=True) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
