"""`doit load` as a pull from the store: the engine takes only the layers it lacks.

The real Docker engine pulls from dream's short-lived registry on 127.0.0.1 (dream/engine.py,
dream/registry/serve.py). Every image here has content no other run had (a random token), so
"the first load sends every layer" holds on an engine that ran these tests before.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.registry.serve import StoreRegistry
from dream.store import Store
from tests.conftest import Project, make_project, require_docker

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"^loaded (?P<tags>.+) \((?P<sent>\d+) of (?P<total>\d+) layers sent, "
                     r"(?P<bytes>[\d,]+) bytes\)$", re.M)
SERVING = re.compile(r"serving the store on 127\.0\.0\.1:(\d+) ")


def _recipe(name: str, token: str) -> str:
    return f"""
image: {{name: {name}, tags: [latest, "1"], entrypoint: [/bin/none]}}
layers:
  - name: base
    files: [{{dest: /token, content: "{token}"}}]
  - name: data
    files: [{{dest: /data, src: data}}]
  - name: app
    files: [{{dest: /app, src: app}}]
"""


@pytest.fixture
def image(tmp_path: Path) -> Iterator[tuple[Project, str]]:
    """A three-layer files-only image of fresh content; its engine tags are removed afterwards."""
    require_docker()
    name = f"dream-pull-{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path / "p", {f"{name}.yaml": _recipe(name, uuid.uuid4().hex)}, with_demo=False)
    data, app = project.root / "recipes" / "data", project.root / "recipes" / "app"
    data.mkdir()
    app.mkdir()
    (data / "blob").write_bytes(uuid.uuid4().bytes * 20_000)  # 320 kB that no other run has
    (app / "main.py").write_text(f"print('{uuid.uuid4().hex}')\n")
    try:
        yield project, name
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{name}:latest", f"{name}:1"], capture_output=True)


def _manifest(project: Project, name: str) -> dict[str, Any]:
    digest = project.manifest_digest(name)
    return json.loads((project.store / "blobs" / "sha256" / digest[7:]).read_text())


def _summary(run: subprocess.CompletedProcess[str]) -> tuple[int, int, int]:
    found = SUMMARY.search(run.stdout)
    assert found, run.stdout + run.stderr
    return int(found["sent"]), int(found["total"]), int(found["bytes"].replace(",", ""))


def _port(run: subprocess.CompletedProcess[str]) -> int:
    found = SERVING.search(run.stdout)
    assert found, run.stdout
    return int(found[1])


def _inspect(reference: str) -> dict[str, Any] | None:
    run = subprocess.run(["docker", "image", "inspect", reference], capture_output=True, text=True)
    return json.loads(run.stdout)[0] if run.returncode == 0 else None


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_load_sends_only_the_layers_the_engine_lacks(image: tuple[Project, str]) -> None:
    project, name = image
    project.doit(f"build:{name}")
    first = project.doit(f"load:{name}", env={"DREAM_LOAD_VIA": ""})
    manifest = _manifest(project, name)
    sizes = [layer["size"] for layer in manifest["layers"]]
    assert _summary(first) == (3, 3, sum(sizes) + manifest["config"]["size"]), first.stdout
    assert _refused(_port(first)), "the server still answers after the load"

    (project.root / "recipes" / "app" / "main.py").write_text("print('changed')\n")
    project.doit(f"build:{name}")
    second = project.doit(f"load:{name}")
    changed = _manifest(project, name)
    assert changed["layers"][:2] == manifest["layers"][:2] and changed["layers"][2] != manifest["layers"][2]
    assert _summary(second) == (1, 3, changed["layers"][2]["size"] + changed["config"]["size"]), second.stdout
    assert _refused(_port(second))

    config = json.loads((project.store / "blobs" / "sha256" / changed["config"]["digest"][7:]).read_text())
    for tag in ("latest", "1"):
        inspected = _inspect(f"{name}:{tag}")
        assert inspected is not None, f"{name}:{tag} is not in the engine"
        assert inspected["Id"] == changed["config"]["digest"]
        assert inspected["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
        assert not [d for d in inspected["RepoDigests"] if d.startswith("127.0.0.1")], inspected["RepoDigests"]
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert not [r for r in listed if r.startswith("127.0.0.1:") and r.endswith(f"/{name}")], listed
    assert f"-- load:{name}" in project.doit(f"load:{name}").stdout  # the engine has it: up to date


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, wrong bytes


def test_a_corrupt_blob_is_never_served(image: tuple[Project, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`doit load` builds first, and a build replaces a corrupt blob; so the load itself is
    called here, on a store whose layer went bad after the build: before the server starts, and
    while it serves (the engine asks, the server hashes the changed file again and refuses)."""
    from dream import engine
    project, name = image
    project.doit(f"build:{name}")
    store = Store(project.store)
    manifest = store.tagged(name)
    assert manifest is not None
    layer = Descriptor.from_json(store.read_manifest(manifest.digest)["layers"][1])
    blob = store.blob_path(layer.digest)
    pristine = blob.read_bytes()

    _corrupt(blob)
    with pytest.raises(DreamError) as before:
        engine.load(Store(project.store), manifest, name, ["latest", "1"])
    assert str(before.value) == (f"blob {layer.digest} in the store is corrupt (does not match its digest); "
                                 "the next build or fetch replaces it, `doit verify --repair` removes it")
    assert _inspect(f"{name}:latest") is None and _inspect(f"{name}:1") is None

    blob.write_bytes(pristine)
    served: list[StoreRegistry] = []

    class CorruptedOnceServing(StoreRegistry):
        def start(self) -> StoreRegistry:
            served.append(super().start())
            _corrupt(blob)  # after the load checked every blob: only the server stands in the way
            return self

    monkeypatch.setattr(engine, "StoreRegistry", CorruptedOnceServing)
    with pytest.raises(DreamError) as during:
        engine.load(Store(project.store), manifest, name, ["latest", "1"])
    message = str(during.value)
    assert "\n" not in message and message.startswith("docker pull from the store failed: ")
    assert f"the store refused: blob {layer.digest} in the store is corrupt" in message
    assert layer.digest not in served[0].counts.layers and served[0].counts.refused
    assert _inspect(f"{name}:latest") is None and _inspect(f"{name}:1") is None
    assert _refused(served[0].port)


def test_the_archive_fallback_when_asked(image: tuple[Project, str]) -> None:
    project, name = image
    project.doit(f"build:{name}")
    run = project.doit(f"load:{name}", env={"DREAM_LOAD_VIA": "archive"})
    assert "sent as an archive: DREAM_LOAD_VIA=archive" in run.stdout
    assert "serving the store" not in run.stdout
    inspected = _inspect(f"{name}:latest")
    assert inspected is not None and inspected["Id"] == _manifest(project, name)["config"]["digest"]


# ------------------------------------------------------------------ the server, without the engine

def _request(host: str, method: str, path: str, headers: dict[str, str] | None = None,
             ) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_the_server_answers_only_what_a_pull_needs(tmp_path: Path) -> None:
    name = "served"
    project = make_project(tmp_path / "p", {f"{name}.yaml": _recipe(name, uuid.uuid4().hex)}, with_demo=False)
    for folder, content in (("data", b"d" * 100_000), ("app", b"print(1)\n")):
        (project.root / "recipes" / folder).mkdir()
        (project.root / "recipes" / folder / "f").write_bytes(content)
    project.doit(f"build:{name}")
    store = Store(project.store)
    manifest = store.tagged(name)
    assert manifest is not None
    body = store.read_manifest(manifest.digest)
    layer = Descriptor.from_json(body["layers"][1])
    blob_file = store.blob_path(layer.digest)
    with StoreRegistry(store, manifest, name, tags=["latest"]) as registry:
        host = registry.host
        assert host.startswith("127.0.0.1:")
        assert _request(host, "GET", "/v2/")[0] == 200
        for reference in (manifest.digest, "latest"):
            status, headers, data = _request(host, "GET", f"/v2/{name}/manifests/{reference}")
            assert status == 200 and headers["content-type"] == manifest.mediaType
            assert headers["docker-content-digest"] == manifest.digest and data == store.read_blob(manifest.digest)
        status, headers, data = _request(host, "HEAD", f"/v2/{name}/blobs/{layer.digest}")
        assert status == 200 and int(headers["content-length"]) == layer.size and data == b""
        status, headers, data = _request(host, "GET", f"/v2/{name}/blobs/{layer.digest}")
        assert status == 200 and data == blob_file.read_bytes()
        status, headers, data = _request(host, "GET", f"/v2/{name}/blobs/{layer.digest}", {"Range": "bytes=10-19"})
        assert status == 206 and data == blob_file.read_bytes()[10:20]
        assert headers["content-range"] == f"bytes 10-19/{layer.size}"
        status, _, data = _request(host, "GET", f"/v2/other/manifests/{manifest.digest}")
        assert status == 404 and json.loads(data)["errors"][0]["code"] == "NAME_UNKNOWN"
        status, _, data = _request(host, "GET", f"/v2/{name}/blobs/sha256:{'0' * 64}")
        assert status == 404 and json.loads(data)["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert _request(host, "GET", "/v2/_catalog")[0] == 404
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            status, _, data = _request(host, method, f"/v2/{name}/blobs/uploads/")
            assert status == 405 and json.loads(data)["errors"][0]["code"] == "UNSUPPORTED"
        damaged = bytearray(blob_file.read_bytes())
        damaged[0] ^= 0xFF
        blob_file.write_bytes(bytes(damaged))  # changed while the server runs: hashed again, refused
        status, _, data = _request(host, "GET", f"/v2/{name}/blobs/{layer.digest}")
        assert status == 404 and b"corrupt" in data
        assert registry.counts.layers == {layer.digest}  # the whole GET above; the range is not whole
        assert registry.counts.refused
        port = registry.port
    assert _refused(port)


def test_ctrl_c_during_the_pull_stops_the_server(tmp_path: Path) -> None:
    """The engine's pull interrupted (Ctrl-C in the client): the server is stopped, its port
    closed, and nothing is tagged (a stand-in client: no engine needed)."""
    from dream import engine
    name = "interrupted"
    project = make_project(tmp_path / "p", {f"{name}.yaml": _recipe(name, uuid.uuid4().hex)}, with_demo=False)
    for folder in ("data", "app"):
        (project.root / "recipes" / folder).mkdir()
        (project.root / "recipes" / folder / "f").write_text(folder)
    project.doit(f"build:{name}")
    store = Store(project.store)
    manifest = store.tagged(name)
    assert manifest is not None
    seen: dict[str, object] = {}

    class Api:
        def pull(self, repository: str, tag: str, stream: bool, decode: bool) -> Iterator[dict[str, str]]:
            seen["repository"], seen["tag"] = repository, tag
            host = repository.split("/")[0]
            status, _, _ = _request(host, "GET", f"/v2/{name}/manifests/{tag}")
            seen["manifest"] = status
            yield {"status": "Pulling fs layer", "id": "x"}
            raise KeyboardInterrupt

        def tag(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("tagged after an interrupted pull")

        remove_image = tag

    class Client:
        api = Api()

    with pytest.raises(KeyboardInterrupt):
        engine._pull(Client(), store, manifest, name, ["latest"])
    assert seen["tag"] == manifest.digest and seen["manifest"] == 200
    assert str(seen["repository"]).startswith("127.0.0.1:")
    assert _refused(int(str(seen["repository"]).split("/")[0].split(":")[1]))
