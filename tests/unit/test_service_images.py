"""Per-service images in a store (dream/managers/images.py), on a tiny hand-made base image:
every service's image is the base's layers (the same blobs) plus one small layer of its own,
with a config that says what the service is; the build is deterministic and a second one
writes nothing."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.managers.images import build_service_images, service_references
from dream.oci.compress import CODECS, decompressed
from dream.oci.image import write_image
from dream.oci.layer import build_layer
from dream.oci.tree import Tree
from dream.recipe.load import load_recipe
from dream.recipe.model import Deployment
from dream.services.per_service import one_service_plan
from dream.services.plan import plan_json
from dream.services.supervisor_files import PACKAGE_DIR, supervisor_sources
from dream.store import Descriptor, Store

RECIPE = """\
deployments:
  db-app:
    services: [db, app, tool]
    env: {DB_PORT: "6400"}
services:
  db:
    command: exec db --port "$DB_PORT"
    user: nobody
    volumes: [data/db]
    ports: [6400]
    readiness:
      exec: db-ping
      period: 100ms
      timeout: 2s
      initial_delay: 1.5
      failure_threshold: 7
    stop_signal: SIGINT
  app:
    command: [app]
    working_dir: srv
    depends_on: {db: healthy}
    readiness:
      http: {path: /}
      period: 0
      timeout: 0
    ports: [8080, 8081]
  tool:
    command: [tool]
"""
BASE_IMAGE = {"name": "demo", "env": {"LANG": "C.UTF-8"}, "labels": {"org.example": "kept"},
              "ports": ["6400/tcp", "8080/tcp", "9999/tcp"], "cmd": ["python3", "-m", "dream_supervisor", "x.json"],
              "user": "app", "workdir": "/home/app", "architecture": "amd64"}
NS = 1_000_000_000


def deployment(tmp_path: Path) -> Deployment:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / "demo.yaml"
    path.write_text(RECIPE)
    return load_recipe(path, tmp_path).deployments["db-app"]


def base_store(root: Path, compression: str = "gzip") -> tuple[Store, Descriptor]:
    """A store holding the image ``demo`` of two small layers."""
    store = Store(root).init()
    layers = []
    for name, text in (("system", b"the base system\n"), ("app", b"the app\n")):
        tree = Tree()
        tree.add_bytes(f"/opt/{name}.txt", text * 1000)
        layers.append((name, "", build_layer(tree, CODECS[compression], 0, store)))
    manifest = write_image(store, BASE_IMAGE, layers)
    store.tag("demo", manifest)
    return store, manifest


def blobs(store: Store) -> dict[str, float]:
    return {path.name: path.stat().st_mtime for path in store.blobs.iterdir()}


def manifest_and_config(store: Store, descriptor: Descriptor) -> tuple[dict, dict]:  # type: ignore[type-arg]
    manifest = store.read_manifest(descriptor.digest)
    return manifest, store.read_json(manifest["config"]["digest"])


def members(store: Store, layer: dict) -> dict[str, tarfile.TarInfo | bytes]:  # type: ignore[type-arg]
    found: dict[str, tarfile.TarInfo | bytes] = {}
    with decompressed(open(store.blob_path(layer["digest"]), "rb"), layer["mediaType"]) as stream:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                handle = tar.extractfile(info)
                found[info.name] = handle.read() if handle else info
    return found


def test_services_share_every_layer_but_their_small_one(tmp_path: Path) -> None:
    store, base = base_store(tmp_path / "store")
    images = build_service_images(store, deployment(tmp_path))
    assert list(images) == ["db", "app", "tool"]
    base_layers = store.read_manifest(base.digest)["layers"]
    small = []
    for name, descriptor in images.items():
        manifest, _ = manifest_and_config(store, descriptor)
        assert manifest["layers"][:-1] == base_layers
        small.append(manifest["layers"][-1]["digest"])
        assert store.tagged(f"db-app-{name}").digest == descriptor.digest
    assert len(set(small)) == 3
    sizes = {name: store.read_manifest(d.digest)["layers"][-1]["size"] for name, d in images.items()}
    assert all(size < 40_000 for size in sizes.values()), sizes


def test_the_small_layer_holds_the_supervisor_and_the_one_service_plan(tmp_path: Path) -> None:
    store, _ = base_store(tmp_path / "store")
    chosen = deployment(tmp_path)
    manifest, _ = manifest_and_config(store, build_service_images(store, chosen)["db"])
    found = members(store, manifest["layers"][-1])
    sources = supervisor_sources()
    package = PACKAGE_DIR.lstrip("/")
    assert {name: data for name, data in found.items() if name.startswith(package + "/")} == \
        {f"{package}/{file}": data for file, data in sources.items()}
    assert found["etc/dream/services/db-app-db.json"] == plan_json(one_service_plan(chosen, "db")).encode()
    files = {name for name, data in found.items() if isinstance(data, bytes)}
    assert files == {f"{package}/{file}" for file in sources} | {"etc/dream/services/db-app-db.json"}
    directories = [info for info in found.values() if isinstance(info, tarfile.TarInfo)]
    assert all((info.uid, info.gid, info.mode) == (0, 0, 0o755) for info in directories)


def test_the_config_says_what_the_service_is(tmp_path: Path) -> None:
    store, base = base_store(tmp_path / "store")
    images = build_service_images(store, deployment(tmp_path))
    _, base_config = manifest_and_config(store, base)
    manifest, config = manifest_and_config(store, images["db"])
    inner = config["config"]
    assert inner["Entrypoint"] == ["python3", "-m", "dream_supervisor", "/etc/dream/services/db-app-db.json"]
    assert "Cmd" not in inner
    assert (inner["User"], inner["WorkingDir"], inner["StopSignal"]) == ("root", "/", "SIGTERM")
    assert inner["Env"] == base_config["config"]["Env"]
    assert inner["ExposedPorts"] == {"6400/tcp": {}}
    assert inner["Labels"] == {**base_config["config"]["Labels"], "dev.dream.deployment": "db-app",
                               "dev.dream.service": "db"}
    assert inner["Healthcheck"] == {
        "Test": ["CMD", "python3", "-m", "dream_supervisor", "probe", "/etc/dream/services/db-app-db.json"],
        "Interval": NS // 10, "Timeout": 2 * NS, "StartPeriod": 3 * NS // 2, "Retries": 7}
    assert config["rootfs"]["diff_ids"] == [*base_config["rootfs"]["diff_ids"], _diff_id(store, manifest)]
    assert config["history"][:-1] == base_config["history"]
    assert config["history"][-1]["created_by"] == "dream service db-app/db"
    assert (config["created"], config["architecture"], config["os"]) == \
        (base_config["created"], base_config["architecture"], base_config["os"])

    _, app = manifest_and_config(store, images["app"])
    assert app["config"]["WorkingDir"] == "/"  # the supervisor's root; it enters srv itself
    assert app["config"]["ExposedPorts"] == {"8080/tcp": {}, "8081/tcp": {}}
    health = app["config"]["Healthcheck"]  # 0 would mean Docker's default of 30 s: 1 ms, its least
    assert (health["Interval"], health["Timeout"], health["StartPeriod"], health["Retries"]) == \
        (1_000_000, 1_000_000, 0, 30)
    _, tool = manifest_and_config(store, images["tool"])
    assert "Healthcheck" not in tool["config"] and "ExposedPorts" not in tool["config"]


def _diff_id(store: Store, manifest: dict) -> str:  # type: ignore[type-arg]
    import hashlib
    layer = manifest["layers"][-1]
    with decompressed(open(store.blob_path(layer["digest"]), "rb"), layer["mediaType"]) as stream:
        return "sha256:" + hashlib.sha256(stream.read()).hexdigest()


def test_a_second_build_writes_nothing_and_another_store_gets_the_same_digests(tmp_path: Path) -> None:
    store, _ = base_store(tmp_path / "one")
    chosen = deployment(tmp_path)
    first = build_service_images(store, chosen)
    before, index = blobs(store), (store.root / "index.json").stat().st_mtime_ns
    again = build_service_images(store, chosen)
    assert again == first
    assert blobs(store) == before
    assert (store.root / "index.json").stat().st_mtime_ns == index
    other, _ = base_store(tmp_path / "two")
    assert build_service_images(other, chosen) == first


def test_a_changed_service_changes_only_its_own_image(tmp_path: Path) -> None:
    store, _ = base_store(tmp_path / "store")
    first = build_service_images(store, deployment(tmp_path))
    (tmp_path / "recipes" / "demo.yaml").write_text(RECIPE.replace("command: [tool]", "command: [tool, --new]"))
    changed = load_recipe(tmp_path / "recipes" / "demo.yaml", tmp_path).deployments["db-app"]
    second = build_service_images(store, changed)
    assert second["db"] == first["db"] and second["app"] == first["app"]
    assert second["tool"] != first["tool"]
    assert store.tagged("db-app-tool").digest == second["tool"].digest


def test_the_small_layer_takes_the_image_s_compression(tmp_path: Path) -> None:
    store, base = base_store(tmp_path / "store", "zstd")
    manifest, _ = manifest_and_config(store, build_service_images(store, deployment(tmp_path))["db"])
    assert manifest["layers"][-1]["mediaType"] == CODECS["zstd"].media_type


def test_without_the_recipe_image_it_says_how_to_build_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "store").init()
    with pytest.raises(DreamError) as caught:
        build_service_images(store, deployment(tmp_path))
    assert str(caught.value) == ("deployment db-app runs in image demo, which is not built; "
                                 "run `doit build:demo`")
    assert json.loads((store.root / "index.json").read_text())["manifests"] == []


def test_service_references(tmp_path: Path) -> None:
    assert service_references(deployment(tmp_path)) == {
        "db": "db-app-db:latest", "app": "db-app-app:latest", "tool": "db-app-tool:latest"}


def test_a_service_without_a_user_runs_as_the_recipe_images_user(tmp_path: Path) -> None:
    """The per-service image starts the supervisor as root; the service itself runs as it would
    in the recipe's image (``User: app``), or as the user it names."""
    import json
    store, _ = base_store(tmp_path / "store")
    images = build_service_images(store, deployment(tmp_path))
    users = {}
    for name in ("db", "tool"):
        manifest, config = manifest_and_config(store, images[name])
        assert config["config"]["User"] == "root"
        plan = members(store, manifest["layers"][-1])[f"etc/dream/services/db-app-{name}.json"]
        users[name] = json.loads(plan)["services"][0]["user"]  # type: ignore[arg-type]
    assert users == {"db": "nobody", "tool": "app"}
