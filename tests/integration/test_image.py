"""The image engine end to end: real apt, real Docker engine, skopeo and umoci as readers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Project, make_project, require, require_docker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The demo recipe (Debian + python3 + app files) built once for this module."""
    require("apt-get")
    project = make_project(tmp_path_factory.mktemp("built") / "project")
    project.doit("build:python-app")
    return project


def test_loads_into_docker_and_runs(built: Project) -> None:
    require_docker()
    subprocess.run(["docker", "rmi", "python-app:latest", "python-app:0.1"], capture_output=True)
    run = built.doit("load:python-app")
    assert "python-app:latest" in run.stdout
    assert "-- load:python-app" in built.doit("load:python-app").stdout  # the engine has it: up to date
    config = json.loads((built.store / "blobs" / "sha256" / _manifest(built)["config"]["digest"][7:]).read_text())
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", "python-app:latest"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert image_id == _manifest(built)["config"]["digest"]
    assert config["config"]["Env"][-1].startswith("PATH=")
    out = subprocess.run(["docker", "run", "--pull", "never", "--rm", "--network", "none", "python-app:latest"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("hello from dream (Python 3.11")
    probe = ("import pathlib, ssl, sqlite3; print(pathlib.Path('/app/main.py').read_text().splitlines()[0]);"
             "print(len(ssl.create_default_context().get_ca_certs()) > 100 or ssl.create_default_context().cert_store_stats())")
    out = subprocess.run(["docker", "run", "--pull", "never", "--rm", "--network", "none", "python-app:latest", "-c", probe],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == '"""The demo app of recipes/python-app.yaml: prints what the image put in place."""'
    shell = subprocess.run(["docker", "run", "--pull", "never", "--rm", "--network", "none", "--entrypoint", "sh", "python-app",
                            "-c", "bash -c 'echo $BASH_VERSION' && awk 'BEGIN{print 7*6}' && getent passwd root"
                            " && dpkg-query -W python3"], capture_output=True, text=True, check=True).stdout.split("\n")
    assert shell[0].startswith("5.2") and shell[1] == "42" and shell[2].startswith("root:x:0:0")
    assert shell[3].startswith("python3\t3.11")


def test_a_new_container_compiles_no_standard_library_module(built: Project) -> None:
    """The Debian layer carries the standard library's bytecode (as Debian's postinst would
    have compiled it), so Python reads pycs at every start instead of compiling into the
    container's throw-away layer; `python3 -v` names the file each module's code came from."""
    require_docker()
    built.doit("load:python-app")
    code = "import asyncio, email.mime.text, json, ssl, sqlite3, urllib.request"
    run = subprocess.run(["docker", "run", "--pull", "never", "--rm", "--network", "none", "--read-only",
                          "python-app:latest", "-v", "-c", code], capture_output=True, text=True, check=True)
    loaded = re.findall(r"^# code object from '?([^']+?)'?$", run.stderr, re.M)
    assert len(loaded) > 100
    assert [path for path in loaded if not path.endswith(".pyc")] == []
    assert "/usr/lib/python3.11/asyncio/__pycache__/base_events.cpython-311.pyc" in loaded


def test_skopeo_and_umoci_read_the_store(built: Project, tmp_path: Path) -> None:
    skopeo, umoci = require("skopeo"), require("umoci")
    inspect = json.loads(subprocess.run([skopeo, "inspect", f"oci:{built.store}:python-app"],
                                        capture_output=True, text=True, check=True).stdout)
    assert inspect["Digest"] == built.manifest_digest("python-app")
    assert "GREETING=hello from dream" in inspect["Env"]
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{built.store}:python-app", str(bundle)],
                   capture_output=True, check=True)
    rootfs = bundle / "rootfs"
    assert (rootfs / "app" / "main.py").read_text().startswith('"""The demo app')
    assert os.readlink(rootfs / "bin") == "usr/bin"
    assert (rootfs / "usr" / "bin" / "python3").exists()
    assert (rootfs / "etc" / "ld.so.cache").stat().st_size > 0


def test_the_image_is_the_golden_one(built: Project) -> None:
    """Built from its lock into an empty store: the digest tests/golden records (see its README)."""
    from tests.integration.test_golden import golden
    assert built.manifest_digest("python-app") == golden("python-app")


def test_reproducible_in_two_empty_stores(built: Project, tmp_path: Path) -> None:
    time.sleep(1.1)  # a different second: nothing may depend on the clock
    other = make_project(tmp_path / "elsewhere" / "deeper")
    other.doit("build:python-app")
    assert other.manifest_digest("python-app") == built.manifest_digest("python-app")


def test_incremental_rebuilds(built: Project) -> None:
    again = built.doit("build:python-app")
    assert Project.ran_layers(again) == []
    before = _manifest(built)["layers"]

    main = built.root / "recipes" / "app" / "main.py"
    main.write_text(main.read_text() + "# changed\n")
    started = time.perf_counter()
    changed = built.doit("build:python-app")
    elapsed = time.perf_counter() - started
    assert Project.ran_layers(changed) == ["layer:python-app/app"], changed.stdout
    after = _manifest(built)["layers"]
    assert after[0] == before[0] and after[1] != before[1]
    print(f"one-file change rebuilt in {elapsed:.2f} s")

    (built.root / ".dream" / "doit.json").unlink()
    forgotten = built.doit("build:python-app")
    assert Project.ran_layers(forgotten) == []
    assert _manifest(built)["layers"] == after


def test_verify_and_gc(built: Project) -> None:
    assert "0 problems" in built.doit("verify").stdout
    blobs = len(list((built.store / "blobs" / "sha256").iterdir()))
    result = built.doit("gc").stdout
    assert "removed" in result
    assert len(list((built.store / "blobs" / "sha256").iterdir())) <= blobs
    assert "0 problems" in built.doit("verify").stdout
    assert Project.ran_layers(built.doit("build:python-app")) == []


BIG = """
image: {name: big}
layers:
  - name: data
    files: [{dest: /data, src: data}]
"""


def test_kill_9_mid_build_leaves_nothing_referenced(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"big.yaml": BIG}, with_demo=False)
    data = project.root / "recipes" / "data"
    data.mkdir()
    with open(data / "random.bin", "wb") as handle:
        for _ in range(12):
            handle.write(os.urandom(16 << 20))  # 192 MiB that does not compress: > 1 s still to write at 64 MiB
    process = subprocess.Popen(["python3", "-m", "doit", "build:big"], cwd=project.root,
                               env={**os.environ, "DREAM_STORE": str(project.store)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    temporary = project.store / "dream" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [p for p in temporary.glob("blob-*")] if temporary.exists() else []
        if partial and partial[0].stat().st_size > (64 << 20):
            break
        time.sleep(0.005)
    else:
        pytest.fail("the build never started writing its layer")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list(temporary.glob("blob-*")), "the kill happened mid-write"
    assert not list((project.store / "dream" / "refs").glob("*/*.json"))

    rebuilt = project.doit("build:big")
    assert Project.ran_layers(rebuilt) == ["layer:big/data"]
    assert "0 problems" in project.doit("verify").stdout
    for ref in (project.store / "dream" / "refs").glob("*/*.json"):
        digest = json.loads(ref.read_text())["digest"]
        assert (project.store / "blobs" / "sha256" / digest[7:]).exists()
    assert "freed" in project.doit("gc").stdout
    assert not list(temporary.iterdir())


SMALL = """
image: {name: small}
layers:
  - name: a
    files: [{dest: /a, content: a}]
  - name: b
    files: [{dest: /b, content: b, owner: "1000:1000", mode: "0600"}]
"""


def test_concurrent_builds_share_one_store(tmp_path: Path) -> None:
    store = tmp_path / "shared-store"
    projects = [make_project(tmp_path / f"p{i}", {"small.yaml": SMALL}, with_demo=False) for i in range(4)]
    env = {**os.environ, "DREAM_STORE": str(store)}
    runs = [subprocess.Popen(["python3", "-m", "doit", "build:small"], cwd=p.root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in projects]
    outputs = [run.communicate()[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    index = json.loads((store / "index.json").read_text())
    assert len(index["manifests"]) == 1
    shared = Project(tmp_path / "p0", store)
    assert "0 problems" in shared.doit("verify").stdout


def _manifest(project: Project) -> dict:  # type: ignore[type-arg]
    digest = project.manifest_digest("python-app")
    return json.loads((project.store / "blobs" / "sha256" / digest[7:]).read_text())
