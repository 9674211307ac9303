"""A bootable VM from an image's layers: root disk, kernel and initramfs, in the store.

The root file system is the image's own layer blobs applied in order (dream/vm/layers.py), the
VM's locked Debian packages unpacked on top (dream/vm/packages.py: a kernel, systemd, udev,
dbus, kmod, busybox), dream's fix-ups (dream/debian/fixups.py's for alternatives, PAM, the
dynamic linker cache; dream/vm/system.py's for systemd and the guest) and the deployment's
rendered systemd units. Written out to a scratch directory, it becomes an ext4 image with
``mke2fs -d`` (dream/vm/ext4.py), with no mount and no root; the kernel is the package's
vmlinuz, the initramfs dream's own (dream/vm/initramfs.py).

Content-addressed like a layer: the three files are blobs, named by an OCI artifact manifest
(``artifactType`` `VM_ARTIFACT`, its config the boot settings), and a ref maps the inputs'
key (the image's manifest digest, the locked packages, the rendered units, the settings that
change bytes, mke2fs's version, `VM_VERSION`) to that manifest: an unchanged VM is one stat
per blob. Tagged in index.json (``<deployment>.vm`` unless the caller names it), so ``gc``
keeps it while the tag exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from dream.debian.fixups import FIXUPS_VERSION, alternatives, ld_cache, pam_common
from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.oci.digest import canonical_json
from dream.oci.image import source_date_epoch
from dream.oci.mediatypes import MANIFEST
from dream.oci.tree import DIR, Tree
from dream.store.layout import Store, file_sha256
from dream.vm import system
from dream.vm.ext4 import make_ext4, materialize, normalize_times
from dream.vm.initramfs import build_initramfs, kernel_release
from dream.vm.layers import image_tree, resolve
from dream.vm.modules import run_depmod
from dream.vm.packages import fetch_vm_packages
from dream.vm.rootexec import python_bytecode
from dream.vm.spec import VmSpec

VM_VERSION = "1"
VM_ARTIFACT = "application/vnd.dream.vm.v1"
VM_CONFIG = "application/vnd.dream.vm.config.v1+json"
KERNEL = "application/vnd.dream.vm.kernel.v1"
INITRD = "application/vnd.dream.vm.initrd.v1.cpio"
DISK = "application/vnd.dream.vm.disk.v1.ext4"
CMDLINE = "console=ttyS0,115200 root=/dev/vda rw panic=-1 net.ifnames=0 quiet loglevel=4"
SHUTDOWN_MARGIN = 20.0  # seconds beyond the longest stop grace period: systemd's own shutdown under TCG


def config_dir(deployment: str) -> str:
    """Where the VM's units find the deployment's config files (the renderer's ``config_dir``)."""
    return f"/etc/dream/{deployment}/config"


@dataclass(frozen=True)
class BuiltVm:
    """A VM in the store: its manifest and the boot settings its config holds."""

    manifest: Descriptor
    kernel: Descriptor
    initrd: Descriptor
    disk: Descriptor
    config: Mapping[str, Any]

    def paths(self, store: Store) -> tuple[Path, Path, Path]:
        """The kernel's, initramfs's and disk's blob files (verified)."""
        return store.verified_path(self.kernel), store.verified_path(self.initrd), store.verified_path(self.disk)


def mke2fs_version() -> str:
    tool = shutil.which("mke2fs") or "/sbin/mke2fs"
    try:
        run = subprocess.run([tool, "-V"], capture_output=True, text=True)
    except OSError:
        raise DreamError("mke2fs not found: the VM's disk needs e2fsprogs (apt-get install e2fsprogs)") from None
    return (run.stderr or run.stdout).splitlines()[0].strip() if (run.stderr or run.stdout) else "unknown"


def vm_key(image: Descriptor, lock: Mapping[str, Any], units: Mapping[str, str], plan: Mapping[str, Any],
           spec: VmSpec, deployment: str) -> str:
    """The VM's input key: everything its three blobs' bytes depend on."""
    inputs = {
        "version": VM_VERSION, "fixups": FIXUPS_VERSION, "mke2fs": mke2fs_version(), "cmdline": CMDLINE,
        "image": image.digest, "deployment": deployment, "epoch": source_date_epoch(),
        "packages": [[p["name"], p["version"], p["sha256"]] for p in lock["packages"]],
        "architecture": lock["architecture"], "spec": spec.key_inputs(),
        "units": {path: hashlib.sha256(text.encode()).hexdigest() for path, text in sorted(units.items())},
        "ports": system.forward_ports(plan), "volumes": system.persistent_volumes(plan),
    }
    return hashlib.sha256(canonical_json(inputs)).hexdigest()


def grace(plan: Mapping[str, Any]) -> float:
    """How long a clean poweroff may take: the longest stop grace period, and systemd's margin."""
    return max([float(s["stop_grace_period"]) for s in plan["services"]] or [10.0]) + SHUTDOWN_MARGIN


def load(store: Store, manifest: Descriptor) -> BuiltVm | None:
    """The VM a manifest names, if all its blobs are here."""
    try:
        body = store.read_manifest(manifest.digest)
        config = store.read_json(Descriptor.from_json(body["config"]).digest)
        kernel, initrd, disk = (Descriptor.from_json(layer) for layer in body["layers"])
    except (DreamError, KeyError, ValueError):
        return None
    if not all(store.has_blob(d.digest, d.size) for d in (kernel, initrd, disk)):
        return None
    return BuiltVm(manifest, kernel, initrd, disk, config)


def _commit_file(store: Store, path: Path, media_type: str) -> Descriptor:
    """A file already in the store's tmp directory, hashed and renamed into place as a blob
    (a sparse disk image stays sparse: its bytes are not streamed through a writer)."""
    digest = "sha256:" + file_sha256(path)
    size = path.stat().st_size
    if store.has_blob(digest, size, rehash=False):
        path.unlink()
    else:
        os.chmod(path, 0o444)  # a VM's disk is a backing file: nothing may write into it
        os.replace(path, store.blob_path(digest))
        store.mark_verified(digest)
    return Descriptor(media_type, digest, size)


def assemble(store: Store, image: Descriptor, lock: Mapping[str, Any], units: Mapping[str, str],
             plan: Mapping[str, Any], spec: VmSpec, deployment: str, scratch: Path) -> tuple[Tree, Path]:
    """The VM's root, as a tree and written out below ``scratch/root`` (depmod done there)."""
    layers = [Descriptor.from_json(layer) for layer in store.read_manifest(image.digest)["layers"]]
    tree = image_tree(store, layers, scratch / "layers")
    image_status = system.read_text(tree, "var/lib/dpkg/status")
    from dream.debian.unpack import unpack  # the .deb readers: only a build needs them
    unpacked = unpack(fetch_vm_packages(dict(lock)), scratch / "debs")
    for pattern in spec.exclude:
        unpacked.tree.remove_matching(pattern)
    for path in sorted(unpacked.tree.entries):
        entry = unpacked.tree.entries[path]
        where = resolve(tree, path)
        old = tree.entries.get(where)
        if entry.kind == DIR and old is not None and old.kind == DIR:
            continue  # dpkg leaves an existing directory as it is
        if old is not None and old.kind == DIR and entry.kind != DIR:
            tree.remove(where)
        tree.entries[where] = entry if where == path else replace(entry, path=where)
    alternatives(tree, unpacked.postinst)
    pam_common(tree)
    system.dpkg_records(tree, image_status, unpacked.control, unpacked.files)
    ld_cache(tree, scratch, lock["architecture"])
    system.package_fixups(tree)
    system.guest(tree, deployment)
    system.install_deployment(tree, deployment, units, plan, config_dir(deployment))
    root = scratch / "root"
    root.mkdir()
    return tree, root


def build_vm(store: Store, image: Descriptor, lock: Mapping[str, Any], units: Mapping[str, str],
             plan: Mapping[str, Any], spec: VmSpec, deployment: str, tag: str | None = None,
             say: Any = print) -> BuiltVm:
    """The VM of ``deployment`` over ``image`` (its manifest), built unless its key's ref names
    one whose blobs are here; tagged ``tag`` (default ``<deployment>.vm``)."""
    key = vm_key(image, lock, units, plan, spec, deployment)
    tag = tag or f"{deployment}.vm"
    known = store.get_ref(key)
    found = load(store, known) if known is not None else None
    if found is not None:
        store.touch_ref(key)
        tagged = store.tagged(tag)
        if tagged is None or tagged.digest != found.manifest.digest:
            store.tag(tag, found.manifest)
        return found
    started = time.monotonic()
    epoch = source_date_epoch()
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.tmp_dir, prefix="vm-") as scratch_name:
        scratch = Path(scratch_name)
        tree, root = assemble(store, image, lock, units, plan, spec, deployment, scratch)
        fixes = materialize(tree, root, epoch)
        del tree
        release = kernel_release(root)
        run_depmod(root, release)
        python_bytecode(root)
        normalize_times(root, epoch)
        initrd_bytes = build_initramfs(root, release, mtime=epoch)
        kernel_file = root / "boot" / f"vmlinuz-{release}"
        if not kernel_file.is_file():
            raise DreamError(f"the kernel package has no /boot/vmlinuz-{release}")
        kernel = store.put_bytes(kernel_file.read_bytes(), KERNEL)
        initrd = store.put_bytes(initrd_bytes, INITRD)
        disk_file = scratch / "disk.ext4"
        make_ext4(root, disk_file, spec.disk_size, key, "dream-root", fixes, epoch)
        disk = _commit_file(store, disk_file, DISK)
    config = {"deployment": deployment, "release": release, "cmdline": CMDLINE,
              "ports": system.forward_ports(plan), "grace": grace(plan), "ready": f"{system.READY} {deployment}",
              "data": {"label": system.DATA_LABEL, "mount": system.DATA_MOUNT}}
    config_descriptor = store.put_bytes(canonical_json(config), VM_CONFIG)
    annotations = {"dev.dream.vm.deployment": deployment, "dev.dream.vm.release": release}
    body = {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": VM_ARTIFACT,
            "config": config_descriptor.oci(), "layers": [kernel.oci(), initrd.oci(), disk.oci()],
            "annotations": annotations}
    manifest = store.put_bytes(canonical_json(body), MANIFEST)
    store.put_ref(key, manifest)
    store.tag(tag, manifest)
    say(f"{deployment}: VM disk {disk.digest} ({disk.size >> 20} MiB), kernel {release}, "
        f"initramfs {initrd.size >> 10} KiB, built in {time.monotonic() - started:.1f} s")
    return BuiltVm(manifest, kernel, initrd, disk, config)


def image_status_of(store: Store, image: Descriptor) -> bytes:
    """The image's /var/lib/dpkg/status (what `dream.vm.packages.lock_vm_packages` starts from),
    from the top-most layer that has one (whiteouts are not needed: dpkg's file is replaced)."""
    from dream.oci.read import read_files
    layers = [Descriptor.from_json(layer) for layer in store.read_manifest(image.digest)["layers"]]
    for layer in reversed(layers):
        found = read_files(store, layer, {"var/lib/dpkg/status"})
        if "var/lib/dpkg/status" in found:
            return found["var/lib/dpkg/status"]
    raise DreamError("the image has no /var/lib/dpkg/status: a VM needs a Debian layer below it")


def describe(built: BuiltVm) -> str:
    return json.dumps({"manifest": built.manifest.digest, "disk": built.disk.digest,
                       "kernel": built.kernel.digest, "initrd": built.initrd.digest}, indent=1)


