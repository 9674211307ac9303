"""Per-service images (`render:images`, nix2dream's ``ociContainer``): for each service of a
deployment, the recipe's image (its manifest tagged ``<recipe>`` in the store) with every
layer as it is, the same blobs, plus one small layer of that service: dream's supervisor and
the service's one-service plan (dream/services/per_service.py). The image config says what
the service is: the supervisor as PID 1 running that plan (so volumes, config files, users,
readiness, liveness and replicas mean what they mean on the host), the service's ports, a
``Healthcheck`` from its readiness probe, labels naming deployment and service.

So two services of one recipe share every byte but their small layer, config and manifest.
The build is deterministic and idempotent: the small layer is kept under a ref of its input
key (like a recipe's layers), and an image whose tag already names the manifest these inputs
make is not written again.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from dream.errors import DreamError
from dream.oci.compress import CODECS, Codec
from dream.oci.descriptor import Descriptor
from dream.oci.digest import canonical_json
from dream.oci.image import config_blobs, rfc3339, source_date_epoch, write_blobs
from dream.oci.layer import build_layer
from dream.oci.tree import Tree
from dream.recipe.model import Deployment
from dream.services.healthcheck import deployment_healthcheck
from dream.services.per_service import SERVICE_PLAN_DIR, image_tag, one_service_plan, service_plan_path
from dream.services.plan import plan_json
from dream.services.supervisor_files import PACKAGE_DIR, PACKAGE_PARENTS, supervisor_sources
from dream.store import Store

LAYER_VERSION = "1"  # part of the small layer's key: bump when its tree changes shape
LABEL_DEPLOYMENT = "dev.dream.deployment"
LABEL_SERVICE = "dev.dream.service"


def service_references(deployment: Deployment, store: Store | None = None) -> dict[str, str]:
    """The image reference of each service: ``repo@sha256:…`` once its current image was
    pushed (``push:<deployment>-<service>`` records where, in the store: a manifest's sources),
    else the tag a load gives the engine, ``<deployment>-<service>:latest``."""
    references = {}
    for name in deployment.services:
        tag = image_tag(deployment.name, name)
        manifest = store.tagged(tag) if store is not None else None
        pushed = store.sources(manifest.digest) if store is not None and manifest is not None else []
        references[name] = f"{pushed[0]}@{manifest.digest}" if manifest and pushed else f"{tag}:latest"
    return references


def build_service_images(store: Store, deployment: Deployment) -> dict[str, Descriptor]:
    """Write and tag (``<deployment>-<service>``) each service's image; its manifest's
    descriptor by service. `DreamError` when the recipe's image is not in the store."""
    with store.lock("store", shared=True):  # gc waits: no blob of the base vanishes meanwhile
        base = store.tagged(deployment.recipe)
        if base is None:
            raise DreamError(f"deployment {deployment.name} runs in image {deployment.recipe}, which is "
                             f"not built; run `doit build:{deployment.recipe}`")
        manifest = store.read_manifest(base.digest)
        config = store.read_json(manifest["config"]["digest"])
        codec = _codec(manifest)
        return {name: _service_image(store, deployment, name, manifest, config, codec)
                for name in deployment.services}


def _codec(manifest: dict[str, Any]) -> Codec:
    """The compression of the image's top layer: a layer dream built has the recipe's
    ``image.compression``, and an engine that reads the image reads that."""
    top = manifest["layers"][-1]["mediaType"] if manifest["layers"] else ""
    return next((codec for codec in CODECS.values() if codec.media_type == top), CODECS["gzip"])


def _service_image(store: Store, deployment: Deployment, name: str, manifest: dict[str, Any],
                   base: dict[str, Any], codec: Codec) -> Descriptor:
    layer = _small_layer(store, deployment, name, codec, _image_user(base))
    config, body = config_blobs(_config(base, deployment, name, layer), [*manifest["layers"], layer.oci()])
    tag = image_tag(deployment.name, name)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    current = store.tagged(tag)
    if current is not None and current.digest == digest:
        return Descriptor(current.mediaType, current.digest, current.size)
    written = write_blobs(store, config, body)
    store.tag(tag, written)
    return written


def _image_user(config: dict[str, Any]) -> str | None:
    """The recipe image's ``User`` unless it is root: what a service without ``user`` runs as
    in that image (the per-service image itself starts the supervisor as root)."""
    user = (config.get("config") or {}).get("User") or ""
    return None if user.split(":")[0] in ("", "root", "0") else user


def _small_layer(store: Store, deployment: Deployment, name: str, codec: Codec,
                 image_user: str | None) -> Descriptor:
    """The service's own layer: the supervisor package and the one-service plan (in which a
    service without a user runs as ``image_user``, as it would in the recipe's image)."""
    tree = Tree(f"{deployment.name}/{name}")
    for directory in (*PACKAGE_PARENTS, PACKAGE_DIR, "/etc/dream", SERVICE_PLAN_DIR):
        tree.add_dir(directory, 0o755, 0, 0)
    files = {f"{PACKAGE_DIR}/{file}": data for file, data in supervisor_sources().items()}
    plan = one_service_plan(deployment, name)
    for service in plan["services"]:
        if service["user"] is None:
            service["user"] = image_user
    files[service_plan_path(deployment.name, name)] = plan_json(plan).encode()
    for path, data in files.items():
        tree.add_bytes(path, data, 0o644, 0, 0)
    mtime = source_date_epoch()
    key = hashlib.sha256(canonical_json({
        "kind": "service-image", "version": LAYER_VERSION, "codec": codec.fingerprint, "mtime": mtime,
        "files": {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}})).hexdigest()
    found = store.get_ref(key)
    if found is not None:
        store.touch_ref(key)  # a running build's refs are spared by gc
        return found
    layer = build_layer(tree, codec, mtime, store)
    store.put_ref(key, layer)
    return layer


def _config(base: dict[str, Any], deployment: Deployment, name: str, layer: Descriptor) -> dict[str, Any]:
    """The recipe image's config, made the service's. ``WorkingDir`` stays ``/``, the
    deployment's root, whatever the service's ``working_dir``: the supervisor resolves the
    plan's relative paths (volumes, its working_dir) against its own working directory, and
    the engine runs the health check there too."""
    spec = deployment.services[name]
    config = copy.deepcopy(base)
    inner = dict(config.get("config") or {})
    inner.pop("Cmd", None)
    inner.update(Entrypoint=["python3", "-m", "dream_supervisor", service_plan_path(deployment.name, name)],
                 User="root", WorkingDir="/", StopSignal="SIGTERM",
                 Labels={**(inner.get("Labels") or {}), LABEL_DEPLOYMENT: deployment.name, LABEL_SERVICE: name})
    inner.pop("ExposedPorts", None)
    if spec["ports"]:
        inner["ExposedPorts"] = {f"{port}/tcp": {} for port in spec["ports"]}
    inner.pop("Healthcheck", None)  # a base image's check is not this service's
    check = deployment_healthcheck(service_plan_path(deployment.name, name), [spec])
    if check is not None:
        inner["Healthcheck"] = check
    config["config"] = inner
    config["rootfs"] = {"type": "layers", "diff_ids": [*base["rootfs"]["diff_ids"], layer.diffID]}
    created = base.get("created") or rfc3339(source_date_epoch())
    config["history"] = [*base.get("history", []), {
        "created": created, "created_by": f"dream service {deployment.name}/{name}",
        "comment": "dream's supervisor and the service's one-service plan"}]
    return config

