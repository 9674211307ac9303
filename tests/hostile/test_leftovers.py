"""Issue 12: the cases of the attack that no other hostile test covered, each asserting the exact
outcome (the line, the exit code, no traceback, nothing lost).

- 2  a layer changed under its build is never published to the layer cache (a registry);
- 3  `stop_signal: SIGBOGUS` through `doit run:procfile`;
- 4  one hostile recipe and `verify`, `gc`, `gc --cache`, `build`: one line, gc deletes nothing;
- 6  `push` of a store whose blob is corrupt sends nothing;
- 10 `\\ud83d\\ude00` escapes in YAML; a huge `SOURCE_DATE_EPOCH` through doit; a base image's
     config with `Labels` as a list (through a real registry); a non-UTF-8 file name in a tree;
- 11 `dest: /` for a directory; service and probe ports 0 and 70000;
- 12 an import cycle is one line, once, whichever recipe reaches it; a module importing itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.recipe.load import load_recipe
from tests.conftest import Project, make_project
from tests.registries import RunningRegistry

FILES = """
image: {name: f}
layers:
  - name: data
    files: [{dest: /data, src: data}]
"""
SMALL = """\
image: {name: small}
layers:
  - name: one
    files: [{dest: /etc/small/one.txt, content: "one\\n"}]
  - name: two
    files: [{dest: /etc/small/two.txt, content: "two\\n"}]
"""
NO_CACHE = {"DREAM_LAYER_CACHE": "off"}


def output(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


def no_traceback(run: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in output(run), output(run)
    assert "internal error" not in output(run), output(run)


def blobs(project: Project) -> dict[str, bytes]:
    folder = project.store / "blobs" / "sha256"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def tagged(project: Project) -> list[str]:
    index = project.store / "index.json"
    if not index.exists():
        return []
    return [m["annotations"]["org.opencontainers.image.ref.name"] for m in json.loads(index.read_text())["manifests"]]


def manifest_of(project: Project, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((project.store / "blobs" / "sha256" / project.manifest_digest(name)[7:]).read_bytes())


def layer_names(project: Project, name: str, index: int = 0) -> list[str]:
    digest = manifest_of(project, name)["layers"][index]["digest"]
    with tarfile.open(project.store / "blobs" / "sha256" / digest[7:]) as archive:
        return archive.getnames()


# -- 10: YAML's \u escapes of UTF-16 surrogates ------------------------------------------------

LONE = "is half of a UTF-16 surrogate pair, not a character (write the character itself, or a \\UXXXXXXXX escape)"


@pytest.mark.parametrize("text,line", [
    ('layers:\n  - name: l\n    files:\n      - {dest: "/a\\ud83d", content: x}\n',
     f"recipes/bad.yaml:4: layers[0].files[0].dest: \\ud83d {LONE}"),
    ('layers:\n  - name: l\n    files:\n      - {dest: /a, content: "\\ude00\\ud83d"}\n',
     f"recipes/bad.yaml:4: layers[0].files[0].content: \\ude00 {LONE}"),
    ('image:\n  labels: {"k\\ud83d": v}\n', f"recipes/bad.yaml:2: image.labels: \\ud83d {LONE}"),
    ('image:\n  env: {X: "\\U0000dfff"}\n', f"recipes/bad.yaml:2: image.env.X: \\udfff {LONE}"),
    ('services:\n  a:\n    command: "echo \\ud83d\\ude00 \\udc00"\n',
     f"recipes/bad.yaml:3: services.a.command: \\udc00 {LONE}"),
], ids=["dest", "content-reversed-pair", "label-key", "env-32-bit-escape", "command-after-a-pair"])
def test_a_lone_surrogate_escape_is_one_line(tmp_path: Path, text: str, line: str) -> None:
    project = make_project(tmp_path / "p", {"bad.yaml": text}, with_demo=False)
    with pytest.raises(DreamError) as caught:
        load_recipe(project.root / "recipes" / "bad.yaml", project.root)
    assert str(caught.value) == line
    run = project.doit("build:bad", check=False, env=NO_CACHE)
    assert run.returncode == 1
    no_traceback(run)
    assert run.stderr.strip() == line  # was: UnicodeEncodeError when the key was hashed
    assert blobs(project) == {}


def test_an_escaped_surrogate_pair_is_the_character_it_encodes(tmp_path: Path) -> None:
    recipe = ('image:\n  labels: {"k\\ud83d\\ude00": "v\\uD83D\\uDE00"}\n'
              'layers:\n  - name: l\n    files:\n      - {dest: "/a\\ud83d\\ude00", content: "\\ud83d\\ude00"}\n')
    project = make_project(tmp_path / "p", {"u.yaml": recipe}, with_demo=False)
    run = project.doit("build:u", env=NO_CACHE)
    no_traceback(run)
    config = json.loads((project.store / "blobs" / "sha256" / manifest_of(project, "u")["config"]["digest"][7:]).read_bytes())
    assert config["config"]["Labels"]["k\U0001F600"] == "v\U0001F600"
    assert layer_names(project, "u") == ["a\U0001F600"]


# -- 10: a file name that is not UTF-8 ------------------------------------------------------

@pytest.mark.parametrize("what", ["file-name", "symlink-target"])
def test_a_non_utf8_name_in_a_source_tree_is_one_line(tmp_path: Path, what: str) -> None:
    project = make_project(tmp_path / "p", {"f.yaml": FILES}, with_demo=False)
    data = project.root / "recipes" / "data"
    data.mkdir()
    (data / "ok.txt").write_text("ok\n")
    if what == "file-name":
        with open(os.fsencode(data) + b"/caf\xe9.txt", "wb") as handle:
            handle.write(b"latin-1 name\n")
        named = "caf\\xe9.txt: its name"
    else:
        os.symlink(b"caf\xe9.txt", os.fsencode(data) + b"/link")
        named = "link: its symlink target"
    run = project.doit("build:f", check=False, env=NO_CACHE)
    no_traceback(run)  # was: "internal error in layer:f/data: UnicodeEncodeError: ... surrogates not allowed"
    assert run.returncode == 1
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "is not UTF-8; rename it" in line]
    assert len(lines) == 1 and named in lines[0], run.stdout + run.stderr
    assert tagged(project) == []


# -- 10: SOURCE_DATE_EPOCH through doit ------------------------------------------------------

@pytest.mark.parametrize("value", ["9" * 30, "253402300800", "-1", "1e9", "abc"])
def test_a_bad_source_date_epoch_is_one_line_for_a_build(tmp_path: Path, value: str) -> None:
    project = make_project(tmp_path / "p", {"small.yaml": SMALL}, with_demo=False)
    run = project.doit("build:small", check=False, env={**NO_CACHE, "SOURCE_DATE_EPOCH": value})
    assert run.returncode == 1
    no_traceback(run)
    assert run.stderr.strip() == ("SOURCE_DATE_EPOCH must be whole seconds since 1970, at most 253402300799 "
                                  f"(9999-12-31); got {value!r}")
    assert blobs(project) == {} and tagged(project) == []


# -- 4: one hostile recipe and every command --------------------------------------------------

LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("text,line", [
    (LAUGHS, "recipes/evil.yaml:1: YAML aliases expand to too many values (limit 100000)"),
    ("a: &a [*a]\n", "recipes/evil.yaml:1: a[0]: recursive YAML alias (a node that contains itself)"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", "recipes/evil.yaml:1: YAML nested too deeply (limit 100 levels)"),
], ids=["laughs", "recursive", "nested"])
def test_a_hostile_recipe_is_one_line_for_verify_gc_and_build(tmp_path: Path, text: str, line: str) -> None:
    project = make_project(tmp_path / "p", {"small.yaml": SMALL}, with_demo=False)
    project.doit("build:small", env=NO_CACHE)
    (project.store / "blobs" / "sha256" / ("0" * 64)).write_bytes(b"an untagged blob gc would remove")
    before = blobs(project)
    (project.root / "recipes" / "evil.yaml").write_text(text)
    for args in (["verify"], ["gc"], ["gc", "--cache"], ["build:small"], ["list"]):
        run = project.doit(*args, check=False, env=NO_CACHE)
        assert run.returncode == 1, (args, output(run))
        no_traceback(run)
        assert run.stderr.strip() == line, (args, run.stderr)
    assert blobs(project) == before  # gc refused before it looked at the store
    assert tagged(project) == ["small"]


# -- 3: stop_signal SIGBOGUS through doit run:procfile -----------------------------------------

def test_stop_signal_sigbogus_is_one_line_for_run_procfile(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    recipe = f"services:\n  a:\n    command: touch {marker}; exec sleep 30\n    stop_signal: SIGBOGUS\n"
    project = make_project(tmp_path / "p", {"s.yaml": recipe}, with_demo=False)
    run = subprocess.run([sys.executable, "-m", "doit", "run:procfile", "-d", "s"], cwd=project.root, text=True,
                         capture_output=True, timeout=60, env={**os.environ, "DREAM_STORE": str(project.store)})
    assert run.returncode == 1
    no_traceback(run)
    assert run.stderr.strip() == (
        "recipes/s.yaml:4: services.a.stop_signal: 'SIGBOGUS' is not a signal of this system (SIGTERM, SIGINT, "
        f"SIGQUIT, SIGHUP, SIGUSR1, SIGKILL … or a number from 1 to {int(signal.SIGRTMAX)})")
    assert not marker.exists()  # nothing was started


# -- 11: dest: / and ports -------------------------------------------------------------------

def test_dest_root_for_a_directory_fills_the_root_instead_of_an_empty_layer(tmp_path: Path) -> None:
    recipe = "layers:\n  - name: l\n    files: [{dest: /, src: data}]\n"
    project = make_project(tmp_path / "p", {"root.yaml": recipe}, with_demo=False)
    data = project.root / "recipes" / "data"
    (data / "etc").mkdir(parents=True)
    (data / "etc" / "motd").write_text("hi\n")
    (data / "top.txt").write_text("top\n")
    no_traceback(project.doit("build:root", env=NO_CACHE))
    assert layer_names(project, "root") == ["etc", "etc/motd", "top.txt"]


@pytest.mark.parametrize("field,value,line", [
    ("ports", "[0]", "recipes/bad.yaml:4: services.a.ports[0]: min value is 1"),
    ("ports", "[70000]", "recipes/bad.yaml:4: services.a.ports[0]: max value is 65535"),
    ("readiness", "{http: {port: 0}}", "recipes/bad.yaml:4: services.a.readiness.http.port: min value is 1"),
    ("readiness", "{tcp: {port: 70000}}", "recipes/bad.yaml:4: services.a.readiness.tcp.port: max value is 65535"),
    ("liveness", "{tcp: {port: 65536}}", "recipes/bad.yaml:4: services.a.liveness.tcp.port: max value is 65535"),
])
def test_service_and_probe_ports_out_of_range_are_refused(tmp_path: Path, field: str, value: str, line: str) -> None:
    project = make_project(tmp_path / "p", {"bad.yaml": f"services:\n  a:\n    command: x\n    {field}: {value}\n"},
                           with_demo=False)
    with pytest.raises(DreamError) as caught:
        load_recipe(project.root / "recipes" / "bad.yaml", project.root)
    assert str(caught.value) == line


# -- 12: an import cycle is one line, once -----------------------------------------------------

def cycle_project(tmp_path: Path) -> Project:
    """recipes a and b import each other, c imports a, d imports m3 of the module cycle
    m1 -> m2 -> m3 -> m1 (layers/), e imports m1 and f imports m2."""
    project = make_project(tmp_path / "p", {"a.yaml": "imports: [b.yaml]\n", "b.yaml": "# b\nimports: [a.yaml]\n",
                                             "c.yaml": "imports: [a.yaml]\n", "d.yaml": "imports: [m3]\n",
                                             "e.yaml": "imports: [m1]\n", "f.yaml": "imports: [m2]\n"},
                           with_demo=False)
    layers = project.root / "layers"
    (layers / "m1.yaml").write_text("imports: [m2]\n")
    (layers / "m2.yaml").write_text("# m2\n\nimports: [m3]\n")
    (layers / "m3.yaml").write_text("imports: [m1]\n")
    return project


RECIPE_CYCLE = "recipes/b.yaml:2: imports: import cycle: recipes/a.yaml -> recipes/b.yaml -> recipes/a.yaml"
MODULE_CYCLE = ("layers/m3.yaml:1: imports: import cycle: layers/m1.yaml -> layers/m2.yaml -> layers/m3.yaml "
                "-> layers/m1.yaml")


def test_every_recipe_reaching_a_cycle_names_it_in_the_same_words(tmp_path: Path) -> None:
    """Whichever file a recipe enters the cycle by, the cycle starts at the file that sorts
    first and is reported at the import that closes it: one cycle, one line."""
    project = cycle_project(tmp_path)
    seen = {}
    for name in "abcdef":
        with pytest.raises(DreamError) as caught:
            load_recipe(project.root / "recipes" / f"{name}.yaml", project.root)
        seen[name] = str(caught.value)
    assert seen == {"a": RECIPE_CYCLE, "b": RECIPE_CYCLE, "c": RECIPE_CYCLE,
                    "d": MODULE_CYCLE, "e": MODULE_CYCLE, "f": MODULE_CYCLE}


def test_a_module_that_imports_itself_is_a_cycle(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"app.yaml": "imports: [selfish]\n", "me.yaml": "# me\nimports: [me.yaml]\n"},
                           with_demo=False)
    (project.root / "layers" / "selfish.yaml").write_text("image: {labels: {a: b}}\nimports: [selfish]\n")
    with pytest.raises(DreamError) as caught:  # was: silently skipped, as if a diamond
        load_recipe(project.root / "recipes" / "app.yaml", project.root)
    assert str(caught.value) == "layers/selfish.yaml:2: imports: import cycle: layers/selfish.yaml -> layers/selfish.yaml"
    with pytest.raises(DreamError) as caught:
        load_recipe(project.root / "recipes" / "me.yaml", project.root)
    assert str(caught.value) == "recipes/me.yaml:2: imports: import cycle: recipes/me.yaml -> recipes/me.yaml"


def test_a_diamond_is_still_no_cycle(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"app.yaml": "imports: [left, right]\n"}, with_demo=False)
    layers = project.root / "layers"
    (layers / "left.yaml").write_text("imports: [base]\nimage: {labels: {left: 'yes'}}\n")
    (layers / "right.yaml").write_text("imports: [base]\nimage: {labels: {right: 'yes'}}\n")
    (layers / "base.yaml").write_text("image: {labels: {base: 'yes'}}\n")
    labels = load_recipe(project.root / "recipes" / "app.yaml", project.root).image["labels"]
    assert {"left", "right", "base"} <= set(labels)


def test_doit_prints_an_import_cycle_once(tmp_path: Path) -> None:
    project = cycle_project(tmp_path)
    run = project.doit("list", check=False)
    assert run.returncode == 1
    no_traceback(run)
    assert run.stderr.splitlines() == [RECIPE_CYCLE, MODULE_CYCLE]  # was: 2 + 3 lines, in two wordings each


# -- registries: the layer cache, push, a base image's config --------------------------------

def registry_json(registry: RunningRegistry, path: str) -> tuple[int, object]:
    import requests
    answer = requests.get(registry.url(path), timeout=10)
    return answer.status_code, (answer.json() if answer.headers.get("content-type", "").startswith("application/json")
                                else None)


@pytest.mark.integration
def test_a_layer_changed_under_its_build_is_never_published_to_the_layer_cache(
        registry_anonymous: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2's second machine: the cache must never bind the old key to the new bytes."""
    from dream.tasks import ImageJob, load_recipes
    cache = f"{registry_anonymous.host}/poison/cache"
    first = make_project(tmp_path / "first", {"f.yaml": FILES}, with_demo=False)
    data = first.root / "recipes" / "data"
    data.mkdir()
    (data / "x.txt").write_text("one\n")
    monkeypatch.chdir(first.root)
    monkeypatch.setenv("DREAM_STORE", str(first.store))
    monkeypatch.setenv("DREAM_LAYER_CACHE", cache)
    (recipe,) = load_recipes(first.root)
    job = ImageJob(recipe).layers[0]
    key = job.key  # doit's up-to-date check computes it first
    (data / "x.txt").write_text("two\n")  # the same size, other bytes
    with pytest.raises(DreamError, match="x.txt changed while the layer was being built; run the build again$"):
        job.build()  # doit's task wrapper (dream.boundary) makes it the task's one line
    assert registry_json(registry_anonymous, "/v2/poison/cache/tags/list")[0] == 404  # nothing published
    assert list((first.store / "blobs" / "sha256").iterdir()) == []
    (data / "x.txt").write_text("one\n")  # put back: the old key is right again

    second = make_project(tmp_path / "second", {"f.yaml": FILES}, with_demo=False)
    (second.root / "recipes" / "data").mkdir()
    (second.root / "recipes" / "data" / "x.txt").write_text("one\n")
    run = second.doit("build:f", env={"DREAM_LAYER_CACHE": cache})
    assert "(from the layer cache" not in run.stdout and Project.ran_layers(run) == ["layer:f/data"]
    status, tags = registry_json(registry_anonymous, "/v2/poison/cache/tags/list")
    assert status == 200 and tags["tags"] == [f"layer-{key}"]  # type: ignore[index]  # the right bytes, built here
    assert layer_names(second, "f") == ["data", "data/x.txt"]
    with tarfile.open(second.store / "blobs" / "sha256" / manifest_of(second, "f")["layers"][0]["digest"][7:]) as archive:
        assert archive.extractfile("data/x.txt").read() == b"one\n"  # type: ignore[union-attr]


@pytest.mark.integration
@pytest.mark.parametrize("which", ["layer", "config"])
def test_push_never_sends_a_corrupt_blob(registry_anonymous: RunningRegistry, tmp_path: Path, which: str) -> None:
    from dream.registry.push import push_image
    from dream.oci.reference import parse_reference
    from dream.store import Descriptor, Store
    project = make_project(tmp_path / "p", {"small.yaml": SMALL}, with_demo=False)
    project.doit("build:small", env=NO_CACHE)
    manifest = manifest_of(project, "small")
    target = manifest["layers"][1] if which == "layer" else manifest["config"]
    path = project.store / "blobs" / "sha256" / target["digest"][7:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    repository = f"corrupt/{which}"
    manifest_path = project.store / "blobs" / "sha256" / project.manifest_digest("small")[7:]
    descriptor = Descriptor("application/vnd.oci.image.manifest.v1+json", project.manifest_digest("small"),
                            manifest_path.stat().st_size)
    with pytest.raises(DreamError) as caught:
        push_image(Store(project.store), descriptor, parse_reference(f"{registry_anonymous.host}/{repository}"), ["latest"])
    assert str(caught.value) == (f"blob {target['digest']} in the store is corrupt (does not match its digest); "
                                 "the next build or fetch replaces it, `doit verify --repair` removes it")
    import requests
    assert requests.head(registry_anonymous.url(f"/v2/{repository}/blobs/{target['digest']}"), timeout=10).status_code == 404
    assert registry_json(registry_anonymous, f"/v2/{repository}/tags/list")[0] == 404  # no manifest, no tag
    run = project.doit("push:small", "--to", f"{registry_anonymous.host}/{repository}", env=NO_CACHE)
    no_traceback(run)  # the build before the push replaced the blob: the right bytes went out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == target["digest"][7:]
    assert requests.head(registry_anonymous.url(f"/v2/{repository}/blobs/{target['digest']}"), timeout=10).status_code == 200


def _push_image_with_config(store_root: Path, registry: RunningRegistry, repository: str, config: dict) -> str:  # type: ignore[type-arg]
    """Push a one-layer image whose config's ``config`` is ``config``; its reference."""
    from dream.registry.push import push_image
    from dream.oci.reference import parse_reference
    from dream.store import open_store
    store = open_store(store_root)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("hello")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"hi\n"))
    layer = store.put_bytes(gzip.compress(raw.getvalue(), mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    body = {"architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}
    config_blob = store.put_bytes(json.dumps(body).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = store.put_bytes(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_blob.mediaType, "digest": config_blob.digest, "size": config_blob.size},
        "layers": [{"mediaType": layer.mediaType, "digest": layer.digest, "size": layer.size}]}).encode(),
        "application/vnd.oci.image.manifest.v1+json")
    reference = f"{registry.host}/{repository}"
    push_image(store, manifest, parse_reference(reference), ["latest"])
    return f"{reference}:latest"


@pytest.mark.integration
@pytest.mark.parametrize("config,why", [
    ({"Labels": ["a", "b"]}, "Labels must be an object"),
    ({"Labels": {"a": 1}}, "Labels must map names to strings"),
    ({"Env": "A=1"}, "Env must be a list of strings"),
], ids=["labels-list", "labels-int", "env-string"])
def test_a_base_config_of_another_shape_is_one_line_for_a_build(registry_anonymous: RunningRegistry, tmp_path: Path,
                                                               config: dict, why: str) -> None:  # type: ignore[type-arg]
    reference = _push_image_with_config(tmp_path / "evil-store", registry_anonymous,
                                        f"bad-config/{abs(hash(why)) % 10000}", config)
    project = make_project(tmp_path / "victim", {"victim.yaml": f"layers:\n  - name: base\n    from: {reference}\n"},
                           with_demo=False)
    project.doit("lock:victim")
    run = project.doit("build:victim", check=False)
    assert run.returncode == 1
    no_traceback(run)
    lines = [line for line in output(run).splitlines() if "not a valid OCI image config" in line]
    assert len(lines) == 1, output(run)
    assert lines[0].startswith("recipes/victim.yaml:2: layers.base.from: the base image's config sha256:")
    assert lines[0].endswith(f"… is not a valid OCI image config ({why})")
    assert tagged(project) == []
