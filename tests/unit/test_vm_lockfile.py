"""recipes/<recipe>.vm.lock.json (dream/vm/lockfile.py): an entry per deployment, refused in
one line naming `doit lock:vm` when missing or resolved from other settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.vm.lockfile import read_vm_lock, settings_hash, vm_lock_path, write_vm_lock

IMAGE = [{"architecture": "amd64", "packages": [{"name": "python3", "version": "3.11.2-1+b1"}]}]
PACKAGES = {"architecture": "amd64", "packages": [{"name": "systemd-sysv", "version": "252.38-1~deb12u1"}]}


def test_the_path_is_beside_the_recipe_lock() -> None:
    assert vm_lock_path(Path("recipes/shop.lock.json")) == Path("recipes/shop.vm.lock.json")


def test_entries_round_trip_and_keep_each_other(tmp_path: Path) -> None:
    path = tmp_path / "shop.vm.lock.json"
    hashed = settings_hash(["systemd-sysv"], IMAGE)
    write_vm_lock(path, "web", hashed, PACKAGES)
    write_vm_lock(path, "db", hashed, {**PACKAGES, "packages": []})
    assert read_vm_lock(path, "web", hashed) == PACKAGES
    assert sorted(json.loads(path.read_text())["deployments"]) == ["db", "web"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_missing_or_stale_entry_names_the_command(tmp_path: Path) -> None:
    path = tmp_path / "shop.vm.lock.json"
    with pytest.raises(DreamError, match=r"^shop.vm.lock.json: the VM of deployment web is not locked; "
                                         r"run `doit lock:vm -d web`$"):
        read_vm_lock(path, "web", "sha256:x")
    write_vm_lock(path, "web", settings_hash(["systemd-sysv"], IMAGE), PACKAGES)
    moved = settings_hash(["systemd-sysv", "htop"], IMAGE)
    with pytest.raises(DreamError, match=r"stale \(its packages or the image's Debian layers changed\); "
                                         r"run `doit lock:vm -d web`$"):
        read_vm_lock(path, "web", moved)
    assert settings_hash(["systemd-sysv"], IMAGE) != settings_hash(["systemd-sysv"], [{**IMAGE[0], "suite": "trixie"}])


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "shop.vm.lock.json"
    path.write_text("{not json")
    with pytest.raises(DreamError, match=r"^shop.vm.lock.json: unreadable VM lock"):
        read_vm_lock(path, "web", "sha256:x")


def test_a_vm_carries_the_env_files_its_units_read(tmp_path: Path) -> None:
    """`render:vm`'s files (dream/tasks/vm.py): the units read db.env at /db.env, and the disk
    gets the file there; an env file that cannot be read is one line."""
    from dream.tasks.vm import VmTasks
    from tests.unit.test_per_service_plan import SERVICES, load
    recipe = load(tmp_path, SERVICES)
    deployment = recipe.deployments["demo"]
    (tmp_path / "db.env").write_text("DB_PASSWORD=s3cret\n")
    tasks = VmTasks([recipe], tmp_path, lambda name: deployment, lambda task, d: None, lambda task: deployment)
    _, files = tasks.units(deployment)
    assert files["rootfs/db.env"] == "DB_PASSWORD=s3cret\n"
    assert "EnvironmentFile=/db.env" in files["demo-db.service"]
    (tmp_path / "db.env").unlink()
    with pytest.raises(DreamError, match=r"^service db: env file db.env: cannot be read \(No such file or directory\)$"):
        tasks.units(deployment)
