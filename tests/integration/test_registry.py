"""Push, pull, base images and the layer cache against Debian's real registry (distribution 2.8)
in three setups: anonymous http, htpasswd basic auth over TLS with a test CA, and token auth.

Request counts come from the registry's own log, never from dream's report of itself.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Project, Seed, make_project, require
from tests.registries import RunningRegistry

pytestmark = pytest.mark.integration

SMALL = """\
image:
  name: small
  tags: [latest, "1.0"]
  env: {SMALL: "yes"}
layers:
  - name: one
    files: [{dest: /etc/small/one.txt, content: "one\\n"}]
  - name: two
    files: [{dest: /etc/small/two.txt, content: "two\\n"}]
"""

# shares layer `one` with SMALL
SIBLING = """\
image: {name: sibling}
layers:
  - name: one
    files: [{dest: /etc/small/one.txt, content: "one\\n"}]
  - name: three
    files: [{dest: /etc/small/three.txt, content: "three\\n"}]
"""


def registry_env(registry: RunningRegistry, directory: Path) -> dict[str, str]:
    """What a user of this registry sets: credentials in a Docker config, the CA to trust."""
    env = {"DOCKER_CONFIG": str(registry.docker_config(directory))}
    if registry.ca_file:
        env["DREAM_REGISTRY_CA"] = str(registry.ca_file)
    return env


def blobs_in(project: Project) -> set[str]:
    return {"sha256:" + p.name for p in (project.store / "blobs" / "sha256").iterdir()}


def manifest_of(project: Project, name: str) -> dict:
    digest = project.manifest_digest(name)
    return json.loads((project.store / "blobs" / "sha256" / digest.split(":")[1]).read_text())


def skopeo_digest(registry: RunningRegistry, reference: str, env: dict[str, str]) -> str:
    require("skopeo")
    args = ["skopeo", "inspect", "--no-tags", f"docker://{reference}"]
    if registry.scheme == "http":
        args.insert(2, "--tls-verify=false")
    else:
        cert_dir = Path(env["DOCKER_CONFIG"]) / "certs"
        cert_dir.mkdir(exist_ok=True)
        (cert_dir / "ca.crt").write_bytes(Path(registry.ca_file).read_bytes())
        args.insert(2, f"--cert-dir={cert_dir}")
    if registry.username:
        args.insert(2, f"--creds={registry.username}:{registry.password}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["Digest"]


# -- push, re-push, shared layers, pull by digest: in all three setups ------------------------

def test_push_repush_mount_and_pull_by_digest(any_registry: RunningRegistry, tmp_path: Path) -> None:
    registry = any_registry
    env = registry_env(registry, tmp_path)
    repo = f"{registry.host}/push/{registry.mode}"
    project = make_project(tmp_path / "a", {"small.yaml": SMALL, "sibling.yaml": SIBLING}, with_demo=False)
    project.doit("build:small", "build:sibling")
    digest = project.manifest_digest("small")

    mark = registry.mark()
    run = project.doit("push:small", "--to", repo, env=env)
    assert f"pushed {repo}@{digest}: 3 blobs uploaded" in run.stdout
    assert len(registry.blob_uploads(mark)) == 3  # two layers and the config
    for tag in ("latest", "1.0"):
        assert skopeo_digest(registry, f"{repo}:{tag}", env) == digest

    mark = registry.mark()
    run = project.doit("push:small", "--to", repo, env=env)
    assert "0 blobs uploaded (0 bytes), 0 mounted, 3 already there" in run.stdout
    assert registry.blob_uploads(mark) == []
    assert not [r for r in registry.requests(mark) if r.method in ("POST", "PATCH")]

    # the sibling shares layer `one`: already in this repository, so skipped
    mark = registry.mark()
    run = project.doit("push:sibling", "--to", repo, env=env)
    assert "2 blobs uploaded" in run.stdout and "1 already there" in run.stdout
    assert len(registry.blob_uploads(mark)) == 2
    # in another repository of the same registry, the blobs the store knows are mounted
    mark = registry.mark()
    run = project.doit("push:small", "--to", f"{registry.host}/other/{registry.mode}", env=env)
    assert "0 blobs uploaded (0 bytes), 3 mounted" in run.stdout
    assert registry.blob_uploads(mark) == []

    # pull by digest into an empty store: the same layers, fetched and verified on demand
    pinned = f"{repo}@{digest}"
    consumer = make_project(tmp_path / "b", {"consumer.yaml": f"layers:\n  - name: base\n    from: {pinned}\n"},
                            with_demo=False)
    consumer.doit("lock:consumer", env=env)
    consumer.doit("build:consumer", env=env)
    pushed_layers = [layer["digest"] for layer in manifest_of(project, "small")["layers"]]
    assert [layer["digest"] for layer in manifest_of(consumer, "consumer")["layers"]] == pushed_layers
    assert not set(pushed_layers) & blobs_in(consumer)  # nothing read them yet: nothing fetched
    run = consumer.doit("pull:consumer", env=env)
    assert "fetched 2 blobs" in run.stdout
    assert set(pushed_layers) <= blobs_in(consumer)
    assert "0 problems" in consumer.doit("verify").stdout

    # the credentials went nowhere: not in the stores, doit's databases, the locks or the output
    if registry.password:
        secrets = [registry.password.encode(),
                   base64.b64encode(f"{registry.username}:{registry.password}".encode())]
        for root in (project.root, consumer.root):
            for path in (p for p in root.rglob("*") if p.is_file() and p.name != "config.json"):
                data = path.read_bytes()
                assert not any(secret in data for secret in secrets), path
        assert registry.password not in run.stdout + run.stderr


def test_wrong_password_fails_fast_in_one_line(registry_basic_tls: RunningRegistry,
                                               registry_token: RunningRegistry, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"small.yaml": SMALL}, with_demo=False)
    project.doit("build:small")
    for registry in (registry_basic_tls, registry_token):
        secret = "wrong-Pa55word-xyz"
        config = tmp_path / registry.mode
        config.mkdir()
        good = registry.docker_config(config)
        entry = json.loads((good / "config.json").read_text())
        entry["auths"][registry.host]["auth"] = base64.b64encode(f"{registry.username}:{secret}".encode()).decode()
        (good / "config.json").write_text(json.dumps(entry))
        env = {"DOCKER_CONFIG": str(good), **({"DREAM_REGISTRY_CA": str(registry.ca_file)} if registry.ca_file else {})}
        mark, tokens = registry.mark(), len(registry.token_requests)
        started = time.monotonic()
        run = project.doit("push:small", "--to", f"{registry.host}/denied/app", env=env, check=False)
        elapsed = time.monotonic() - started
        output = run.stdout + run.stderr
        assert run.returncode != 0
        assert elapsed < 10, elapsed
        failure = [line for line in output.splitlines() if "authentication failed" in line]
        assert len(failure) == 1 and registry.username in failure[0], output
        assert "Traceback" not in output and secret not in output
        assert registry.blob_uploads(mark) == []
        # no retries: the registry saw the probe and one authenticated attempt at most
        assert len(registry.requests(mark)) <= 2, registry.requests(mark)
        assert len(registry.token_requests) - tokens <= 1


def test_missing_repository_and_unreachable_registry_are_one_line(registry_anonymous: RunningRegistry,
                                                                  tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    cases = {
        f"{registry_anonymous.host}/no/such:1.0": "not found",
        f"127.0.0.1:{closed}/any/thing:1.0": "registry unreachable (Connection refused)",
    }
    for reference, words in cases.items():
        project = make_project(tmp_path / str(len(words)), {"x.yaml": f"layers:\n  - name: base\n    from: {reference}\n"},
                               with_demo=False)
        started = time.monotonic()
        run = project.doit("lock:x", check=False)
        output = run.stdout + run.stderr
        assert run.returncode != 0 and time.monotonic() - started < 10
        lines = [line for line in output.splitlines() if words in line]
        assert len(lines) == 1 and "x.yaml:2: layers.base.from:" in lines[0], output
        assert "Traceback" not in output


# -- the Docker engine and base images -------------------------------------------------------

@pytest.fixture(scope="module")
def pushed_app(registry_anonymous: RunningRegistry, tmp_path_factory: pytest.TempPathFactory,
               python_app_seed: Seed) -> tuple[Project, str]:
    """The demo python-app, built (its Debian layer from the session's seed) and pushed once for the
    tests that use a runnable image."""
    project = make_project(tmp_path_factory.mktemp("app") / "project", seed=python_app_seed)
    project.doit("build:python-app")
    repo = f"{registry_anonymous.host}/demo/python-app"
    project.doit("push:python-app", "--to", repo)
    return project, repo


def test_docker_pulls_and_runs_the_pushed_image(pushed_app: tuple[Project, str]) -> None:
    from tests.conftest import require_docker
    require_docker()
    project, repo = pushed_app
    subprocess.run(["docker", "rmi", "-f", f"{repo}:latest"], capture_output=True)
    pulled = subprocess.run(["docker", "pull", f"{repo}:latest"], capture_output=True, text=True, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert project.manifest_digest("python-app") in pulled.stdout  # docker reports our digest
    try:
        ran = subprocess.run(["docker", "run", "--rm", "--network", "none", f"{repo}:latest"],
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "hello from dream" in ran.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{repo}:latest"], capture_output=True)


def test_base_image_layers_kept_and_config_inherited(pushed_app: tuple[Project, str], tmp_path: Path) -> None:
    base_project, repo = pushed_app
    recipe = f"""\
image:
  env: {{EXTRA: added}}
  workdir: /srv
layers:
  - name: base
    from: {repo}:latest
  - name: top
    files: [{{dest: /srv/top.txt, content: "top\\n"}}]
"""
    project = make_project(tmp_path / "derived", {"derived.yaml": recipe}, with_demo=False)
    project.doit("lock:derived")
    lock = json.loads((project.root / "recipes" / "derived.lock.json").read_text())
    assert lock["layers"]["base"]["digest"] == base_project.manifest_digest("python-app")
    project.doit("build:derived")

    base = manifest_of(base_project, "python-app")
    derived = manifest_of(project, "derived")
    assert [l["digest"] for l in derived["layers"][:2]] == [l["digest"] for l in base["layers"]]
    config = json.loads((project.store / "blobs" / "sha256" / derived["config"]["digest"][7:]).read_text())["config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GREETING"] == "hello from dream" and env["EXTRA"] == "added"  # inherited + added
    assert config["Entrypoint"] == ["python3"] and config["Cmd"] == ["/app/main.py"]  # inherited
    assert config["WorkingDir"] == "/srv"  # overridden
    assert config["StopSignal"] == "SIGINT"
    # the big base layer was never downloaded: the build only needed its descriptor
    assert base["layers"][0]["digest"] not in blobs_in(project)


# -- the CI scenario: a warm remote cache, an empty store, a one-file change -------------------

def test_ci_with_empty_store_builds_and_pushes_only_the_change(registry_token: RunningRegistry,
                                                               tmp_path: Path) -> None:
    registry = registry_token
    env = {**registry_env(registry, tmp_path), "DREAM_LAYER_CACHE": f"{registry.host}/ci/cache"}
    target = f"{registry.host}/ci/python-app"
    machine_a = make_project(tmp_path / "a")
    started = time.monotonic()
    machine_a.doit("build:python-app", "push:python-app", "--to", target, env=env)
    first = time.monotonic() - started

    machine_b = make_project(tmp_path / "b")
    with open(machine_b.root / "recipes" / "app" / "main.py", "a") as handle:
        handle.write("# one changed line\n")
    mark = registry.mark()
    started = time.monotonic()
    build = machine_b.doit("build:python-app", env=env)
    push = machine_b.doit("push:python-app", "--to", target, env=env)
    second = time.monotonic() - started

    assert "python-app/debian: sha256:" in build.stdout and "(from the layer cache" in build.stdout
    built_here = [line for line in build.stdout.splitlines() if line.startswith("python-app/") and "bytes)" in line]
    assert len(built_here) == 1 and built_here[0].startswith("python-app/app:"), build.stdout
    debian = manifest_of(machine_a, "python-app")["layers"][0]
    assert debian["digest"] not in blobs_in(machine_b)  # never downloaded
    downloads = [r for r in registry.requests(mark) if r.method == "GET" and "/blobs/" in r.path]
    assert downloads == [], downloads
    uploads = registry.blob_uploads(mark)
    new_layer = manifest_of(machine_b, "python-app")["layers"][1]
    # the changed layer (once, into the cache) and the new config: nothing else moved
    assert len(uploads) == 2, uploads
    # the config is new; the changed layer is mounted from the cache; the Debian layer is there
    config_size = manifest_of(machine_b, "python-app")["config"]["size"]
    assert f"1 blobs uploaded ({config_size:,} bytes), 1 mounted, 1 already there" in push.stdout, push.stdout
    moved = new_layer["size"] + manifest_of(machine_b, "python-app")["config"]["size"]
    print(f"\nCI scenario: machine A {first:.2f} s (build + push, cold cache); machine B {second:.2f} s "
          f"(build + push), {len(uploads)} blobs uploaded ({moved:,} bytes), 0 layer bytes downloaded; "
          f"the unchanged layer is {debian['size']:,} bytes")


def test_a_cache_that_is_down_or_denies_access_degrades_to_a_local_build(registry_basic_tls: RunningRegistry,
                                                                         tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    for cache, words in ((f"127.0.0.1:{closed}/cache", "unreachable"),
                         (f"{registry_basic_tls.host}/cache", "needs credentials")):
        project = make_project(tmp_path / str(len(words)), {"small.yaml": SMALL}, with_demo=False)
        run = project.doit("build:small", env={"DREAM_LAYER_CACHE": cache, "DOCKER_CONFIG": str(tmp_path),
                                               "DREAM_REGISTRY_CA": str(registry_basic_tls.ca_file)})
        warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: layer cache")]
        assert len(warnings) == 1 and words in warnings[0], run.stderr  # said once, not per layer
        assert len(Project.ran_layers(run)) == 2 and project.manifest_digest("small")


def test_two_jobs_publishing_the_same_layers_at_once(registry_anonymous: RunningRegistry, tmp_path: Path) -> None:
    env = {**os.environ, "DREAM_LAYER_CACHE": f"{registry_anonymous.host}/race/cache"}
    projects = [make_project(tmp_path / f"job{i}", {"small.yaml": SMALL}, with_demo=False) for i in range(3)]
    import sys
    jobs = [subprocess.Popen([sys.executable, "-m", "doit", "build:small"], cwd=p.root, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**env, "DREAM_STORE": str(p.store)}) for p in projects]
    results = [job.communicate(timeout=120) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), results
    assert not any("warning" in err for _, err in results), [err for _, err in results]
    digests = {p.manifest_digest("small") for p in projects}
    assert len(digests) == 1
    # a fourth machine finds every layer in the cache and builds nothing
    late = make_project(tmp_path / "late", {"small.yaml": SMALL}, with_demo=False)
    run = late.doit("build:small", env=env)
    assert run.stdout.count("(from the layer cache") == 2
    assert late.manifest_digest("small") in digests



# -- memory, and layers from outside -----------------------------------------------------------

def _image_with_layer(store_root: Path, layer: bytes | None = None, size: int = 0) -> tuple[object, object]:
    """A store holding one image whose only layer is ``layer`` (or ``size`` bytes of a
    repeated pattern, written in 1 MiB pieces): the real push path, without a build."""
    import hashlib

    from dream.oci.image import write_image
    from dream.store import Descriptor, open_store
    store = open_store(store_root)
    with store.blob_writer() as writer:
        if layer is not None:
            writer.write(layer)
        else:
            piece = hashlib.sha256(b"dream").digest() * (1 << 15)  # 1 MiB
            for _ in range(size // len(piece)):
                writer.write(piece)
        digest, length = writer.commit()
    diff_id = digest
    if layer is not None:
        import gzip
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, length, diffID=diff_id)
    manifest = write_image(store, {"env": {}}, [("layer", "", descriptor)])
    return store, manifest


def test_a_1_gib_blob_pushes_in_constant_memory(registry_anonymous: RunningRegistry, tmp_path: Path) -> None:
    import sys
    store, manifest = _image_with_layer(tmp_path / "store", size=1 << 30)
    code = f"""
from pathlib import Path
from dream.registry.push import push_image
from dream.oci.reference import parse_reference
from dream.store import Descriptor, open_store
store = open_store(Path({str(store.root)!r}))
manifest = Descriptor.from_json({manifest.__dict__!r})
print(push_image(store, manifest, parse_reference("{registry_anonymous.host}/big/blob"), ["latest"]))
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the pytest
# process's own size at the fork (185 MiB late in the full suite), not this process's peak
print("maxrss_kib", next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
    mark = registry_anonymous.mark()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 blobs uploaded (1,073,742" in done.stdout
    peak_mib = int(done.stdout.split("maxrss_kib")[1]) / 1024
    print(f"\npeak memory pushing a 1 GiB blob: {peak_mib:.1f} MiB")
    assert peak_mib < 100
    assert len(registry_anonymous.blob_uploads(mark)) == 2


def test_a_registry_repository_is_a_publisher(registry_anonymous: RunningRegistry, tmp_path: Path) -> None:
    import requests

    from dream.oci.reference import parse_reference
    from dream.registry.push import RegistryPublisher
    store, manifest = _image_with_layer(tmp_path / "store", size=1 << 20)
    digest = manifest.digest  # type: ignore[attr-defined]
    line = RegistryPublisher(parse_reference(f"{registry_anonymous.host}/published/app")).publish(
        store, manifest, ["1.0"])  # type: ignore[arg-type]
    assert line.startswith(f"pushed {registry_anonymous.host}/published/app@{digest}: 2 blobs uploaded")
    answer = requests.get(registry_anonymous.url("/v2/published/app/tags/list"), timeout=10)
    assert answer.status_code == 200 and answer.json()["tags"] == ["1.0"]


def _tar_gz(entries: list[tuple[str, str]]) -> bytes:
    """A gzip'd tar of (name, kind[:target]) entries: kind is file, dir or symlink:<target>."""
    import gzip
    import io
    import tarfile
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif kind.startswith("symlink:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind.split(":", 1)[1]
                archive.addfile(info)
            else:
                info.size = 5
                archive.addfile(info, io.BytesIO(b"evil\n"))
    return gzip.compress(raw.getvalue(), mtime=0)


@pytest.mark.parametrize("entries, bad", [
    ([("etc", "dir"), ("../escaped", "file")], "../escaped"),
    ([("/etc/cron.d/evil", "file")], "/etc/cron.d/evil"),
    ([("etc", "dir"), ("etc/up", "symlink:../../.."), ("etc/up/root/.ssh/authorized_keys", "file")], "etc/up"),
], ids=["dotdot", "absolute", "symlink-escape"])
def test_a_malicious_base_layer_is_refused(registry_anonymous: RunningRegistry, tmp_path: Path,
                                           entries: list[tuple[str, str]], bad: str) -> None:
    from dream.registry.push import push_image
    from dream.oci.reference import parse_reference
    layer = _tar_gz(entries)
    store, manifest = _image_with_layer(tmp_path / "evil-store", layer=layer)
    repo = f"{registry_anonymous.host}/evil/{len(entries)}-{abs(hash(bad)) % 1000}"
    push_image(store, manifest, parse_reference(repo), ["latest"])

    project = make_project(tmp_path / "victim", {"victim.yaml": f"layers:\n  - name: base\n    from: {repo}:latest\n"},
                           with_demo=False)
    project.doit("lock:victim")
    project.doit("build:victim")  # needs no layer bytes
    run = project.doit("pull:victim", check=False)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    lines = [line for line in output.splitlines() if "unsafe layer entry" in line]
    assert len(lines) == 1 and repr(bad) in lines[0] and repo in lines[0], output
    assert "Traceback" not in output
    layer_digest = manifest_of(project, "victim")["layers"][0]["digest"]
    assert layer_digest not in blobs_in(project)  # refused bytes never enter the store
    assert not list((project.store / "dream" / "tmp").iterdir())


def test_an_untrusted_certificate_is_one_line(registry_basic_tls: RunningRegistry, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"x.yaml": f"layers:\n  - name: base\n    from: {registry_basic_tls.host}/a/b:1\n"},
                           with_demo=False)
    run = project.doit("lock:x", check=False, env={"DOCKER_CONFIG": str(registry_basic_tls.docker_config(tmp_path))})
    output = run.stdout + run.stderr
    lines = [line for line in output.splitlines() if "TLS certificate is not trusted" in line]
    assert run.returncode != 0 and len(lines) == 1 and "Traceback" not in output, output


def test_a_layer_that_vanished_from_the_cache_is_built_again(registry_anonymous: RunningRegistry,
                                                             tmp_path: Path) -> None:
    import requests
    cache = f"{registry_anonymous.host}/vanish/cache"
    env = {"DREAM_LAYER_CACHE": cache}
    writer = make_project(tmp_path / "writer", {"small.yaml": SMALL}, with_demo=False)
    writer.doit("build:small", env=env)
    reader = make_project(tmp_path / "reader", {"small.yaml": SMALL}, with_demo=False)
    assert reader.doit("build:small", env=env).stdout.count("(from the layer cache") == 2
    # someone cleans the cache: the layer blobs go
    for layer in manifest_of(writer, "small")["layers"]:
        gone = requests.delete(registry_anonymous.url(f"/v2/vanish/cache/blobs/{layer['digest']}"), timeout=10)
        assert gone.status_code == 202
    run = reader.doit("pull:small", env=env, check=False)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "cannot fetch blob" in line]
    assert run.returncode != 0 and len(lines) == 2, run.stdout + run.stderr  # one line per layer
    assert all("run the build again" in line for line in lines)
    rebuilt = reader.doit("build:small", env=env)  # the forgotten layer is made here now
    assert sorted(Project.ran_layers(rebuilt)) == ["layer:small/one", "layer:small/two"]
    assert "(from the layer cache" not in rebuilt.stdout  # the entries point at missing blobs: misses
    assert reader.manifest_digest("small") == writer.manifest_digest("small")
    reader.doit("pull:small", env=env)
