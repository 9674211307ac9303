"""Issue 12, defects 6, 10 (store state) and 12 (a re-pointed ref): a damaged store is one line,
a corrupt blob is never trusted and the next build replaces it, `verify --repair` removes it.

One real build of python-app (module fixture, its Debian layer from the session's seed); each test
damages its own copy of that project (`shutil.copytree`: real copies, never the seed's hard links).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from dream.engine import docker_archive
from dream.registry.serve import checked_stream
from dream.errors import DreamError
from dream.oci.tar import CHUNK
from dream.store import layout
from dream.store.layout import Descriptor, Store
from dream.store.maintenance import verify
from tests.conftest import Project, Seed, make_project

NAME = "python-app"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, python_app_seed: Seed) -> tuple[Project, str]:
    project = make_project(tmp_path_factory.mktemp("built") / "p", seed=python_app_seed)
    project.doit(f"build:{NAME}")
    return project, project.manifest_digest(NAME)


@pytest.fixture
def copy(built: tuple[Project, str], tmp_path: Path) -> Project:
    shutil.copytree(built[0].root, tmp_path / "p", symlinks=True)
    return Project(tmp_path / "p", tmp_path / "p" / "store")


def blob(project: Project, which: str) -> Path:
    """The blob file of the image's ``manifest``, ``config``, ``layer0`` or ``layer1``."""
    blobs = project.store / "blobs" / "sha256"
    manifest = project.manifest_digest(NAME)
    body = json.loads((blobs / manifest[7:]).read_bytes())
    digest = {"manifest": manifest, "config": body["config"]["digest"],
              "layer0": body["layers"][0]["digest"], "layer1": body["layers"][-1]["digest"]}[which]
    return blobs / digest[7:]


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(run: object, text: str) -> None:
    out = run.stdout + run.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in out, out
    assert text in out.splitlines(), out


MEDIA = {"manifest": "application/vnd.oci.image.manifest.v1+json",
         "config": "application/vnd.oci.image.config.v1+json",
         "layer0": "application/vnd.oci.image.layer.v1.tar+gzip",
         "layer1": "application/vnd.oci.image.layer.v1.tar+gzip"}


@pytest.mark.parametrize("which", sorted(MEDIA))
def test_a_flipped_byte_is_found_and_the_next_build_replaces_it(copy: Project, built: tuple[Project, str],
                                                                 which: str) -> None:
    path = blob(copy, which)
    flip(path)
    run = copy.doit("verify", check=False)
    assert run.returncode == 1
    one_line(run, f"corrupt blob {path.name}: content hashes to {digest_of(path)}")
    assert run.stderr.count(path.name) == 1  # reported once, not again for the tag that reaches it
    copy.doit(f"build:{NAME}")
    assert digest_of(path) == "sha256:" + path.name  # replaced by the right bytes
    assert copy.manifest_digest(NAME) == built[1]
    assert copy.doit("verify").returncode == 0


@pytest.mark.parametrize("which", sorted(MEDIA))
def test_repair_removes_a_corrupt_blob_and_a_build_restores_it(copy: Project, built: tuple[Project, str],
                                                               which: str) -> None:
    path = blob(copy, which)
    flip(path)
    report = verify(Store(copy.store), repair=True)
    assert not path.exists()
    assert report.repaired[0].startswith(f"corrupt blob {path.name}: content hashes to sha256:")
    assert report.repaired[0].endswith(": removed it")
    assert report.problems == [f"{NAME}: missing blob sha256:{path.name} ({MEDIA[which]})"]
    copy.doit(f"build:{NAME}")
    assert copy.manifest_digest(NAME) == built[1] and digest_of(path) == "sha256:" + path.name
    assert verify(Store(copy.store)).problems == []


def test_an_unchanged_blob_is_not_hashed_again(copy: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    descriptors = [p.name for p in (copy.store / "blobs" / "sha256").iterdir()]
    assert sorted(m.name for m in (copy.store / "dream" / "verified").iterdir()) == sorted(descriptors)
    assert all(Store(copy.store).has_blob("sha256:" + name) for name in descriptors)  # a copy: new inodes, hashed once
    store = Store(copy.store)  # a new process: only the markers remember

    def no_hashing(path: object) -> str:
        raise AssertionError(f"re-hashed {path}")
    monkeypatch.setattr(layout, "file_sha256", no_hashing)
    assert all(store.has_blob("sha256:" + name) for name in descriptors)


def test_a_changed_blob_is_hashed_and_refused(copy: Project) -> None:
    path = blob(copy, "layer1")
    flip(path)
    store = Store(copy.store)
    assert not store.has_blob("sha256:" + path.name)
    size = path.stat().st_size
    with pytest.raises(DreamError) as caught:
        store.local_blob(Descriptor(MEDIA["layer1"], "sha256:" + path.name, size))
    assert str(caught.value) == (f"blob sha256:{path.name} in the store is corrupt (does not match its digest); "
                                 "the next build or fetch replaces it, `doit verify --repair` removes it")


def test_a_blob_touched_but_unchanged_is_trusted_after_one_hash(copy: Project) -> None:
    path = blob(copy, "layer0")
    path.touch()
    store = Store(copy.store)
    assert store.has_blob("sha256:" + path.name)
    assert (store.verified / path.name).read_text() == layout.blob_stamp(path.stat())


def test_commit_replaces_a_same_size_corrupt_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    good = store.put_bytes(b'{"hello": "world"}', "application/json")
    path = store.blob_path(good.digest)
    flip(path)
    again = store.put_bytes(b'{"hello": "world"}', "application/json")
    assert again == good and path.read_bytes() == b'{"hello": "world"}'


def test_read_blob_never_returns_corrupt_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    good = store.put_bytes(b'{"a": 1}', "application/json")
    flip(store.blob_path(good.digest))
    with pytest.raises(DreamError) as caught:
        store.read_json(good.digest)
    assert str(caught.value) == (f"blob {good.digest} in the store is corrupt (does not match its digest); "
                                 "the next build or fetch replaces it, `doit verify --repair` removes it")


def test_load_refuses_a_corrupt_layer_before_sending_a_byte(copy: Project) -> None:
    path = blob(copy, "layer0")
    flip(path)
    store = Store(copy.store)
    manifest = Descriptor(MEDIA["manifest"], copy.manifest_digest(NAME), blob(copy, "manifest").stat().st_size)
    with pytest.raises(DreamError) as caught:
        docker_archive(store, manifest, [f"{NAME}:latest"])
    assert str(caught.value).startswith(f"blob sha256:{path.name} in the store is corrupt")


def test_a_layer_changed_while_it_streams_is_never_sent_whole(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (4 * CHUNK))
    descriptor = Descriptor(MEDIA["layer0"], digest_of(path), 4 * CHUNK)
    stream = checked_stream(path, descriptor)
    sent = next(stream)
    flip(path)
    with pytest.raises(DreamError, match="changed while it was served"):
        for piece in stream:
            sent += piece
    assert len(sent) < 4 * CHUNK


INDEX_DAMAGE = {"empty": b"", "list": b"[]\n", "truncated": None, "no-manifests": b'{"schemaVersion": 2}',
                "bad-entry": b'{"manifests": [[]]}', "a-directory": None}
REASONS = {"empty": "Expecting value: line 1 column 1 (char 0)", "list": "no list of manifests",
           "truncated": "Expecting ',' delimiter: line 4 column 1 (char 50)",
           "no-manifests": "no list of manifests", "bad-entry": "not a content descriptor: []",
           "a-directory": "Is a directory"}


def damage_index(project: Project, how: str) -> None:
    index = project.store / "index.json"
    if how == "truncated":
        index.write_bytes(index.read_bytes()[:50])
    elif how == "a-directory":
        index.unlink()
        index.mkdir()
    else:
        index.write_bytes(INDEX_DAMAGE[how])  # type: ignore[arg-type]


@pytest.mark.parametrize("how", sorted(INDEX_DAMAGE))
def test_a_damaged_index_is_one_line_everywhere(copy: Project, how: str) -> None:
    damage_index(copy, how)
    if how == "truncated":
        REASONS[how] = json_reason((copy.store / "index.json").read_bytes())
    line = (f"{copy.store / 'index.json'}: not an OCI image index ({REASONS[how]}); run `doit verify --repair` "
            "to set it aside (each `doit build:<image>` then tags its image again)")
    for args, code in (([f"build:{NAME}"], 1), (["verify"], 1), (["gc"], 1)):
        run = copy.doit(*args, check=False)
        assert run.returncode == code, run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr
        assert line in run.stdout + run.stderr, run.stdout + run.stderr
    assert len(list((copy.store / "blobs" / "sha256").iterdir())) == 4  # gc deleted nothing


def json_reason(data: bytes) -> str:
    try:
        json.loads(data)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("valid JSON")


@pytest.mark.parametrize("how", ["empty", "list", "truncated", "bad-entry"])
def test_repair_sets_a_damaged_index_aside_and_a_build_tags_again(copy: Project, built: tuple[Project, str],
                                                                 how: str) -> None:
    damage_index(copy, how)
    before = (copy.store / "index.json").read_bytes()
    report = verify(Store(copy.store), repair=True)
    assert report.problems == [] and len(report.repaired) == 1
    assert (copy.store / "dream" / "index.json.bad").read_bytes() == before  # nothing lost
    run = copy.doit(f"build:{NAME}")
    assert Project.ran_layers(run) == []  # the layers are reused, only the tag is written
    assert copy.manifest_digest(NAME) == built[1]


def ref_files(project: Project) -> dict[str, Path]:
    """Each layer's ref file by the blob it names."""
    out = {}
    for path in (project.store / "dream" / "refs").glob("*/*.json"):
        out[json.loads(path.read_bytes())["digest"]] = path
    return out


@pytest.mark.parametrize("content", [b"[]", b"", b"{", b'{"digest": 1}', b"null", b'"x"'])
def test_a_ref_that_is_no_descriptor_is_rebuilt_reported_and_repaired(copy: Project, content: bytes) -> None:
    layer = blob(copy, "layer1")
    ref = ref_files(copy)["sha256:" + layer.name]
    ref.write_bytes(content)
    run = copy.doit("verify", check=False)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    assert any(line.startswith(f"ref {ref.stem}: not a descriptor (") for line in run.stderr.splitlines())
    report = verify(Store(copy.store), repair=True)
    assert report.problems == [] and not ref.exists()
    run = copy.doit(f"build:{NAME}")
    assert Project.ran_layers(run) == [f"layer:{NAME}/app"]
    assert json.loads(ref.read_bytes())["digest"] == "sha256:" + layer.name


def test_a_ref_copied_over_another_is_not_trusted(copy: Project, built: tuple[Project, str]) -> None:
    refs = ref_files(copy)
    debian, app = refs["sha256:" + blob(copy, "layer0").name], refs["sha256:" + blob(copy, "layer1").name]
    shutil.copy(app, debian)  # the debian layer's key now names the app layer
    run = copy.doit("verify", check=False)
    assert run.returncode == 1
    one_line(run, f"ref {debian.stem}: written for another key ({json.dumps(app.stem)})")
    run = copy.doit(f"build:{NAME}")  # not trusted: built again, the image is the right one
    assert Project.ran_layers(run) == [f"layer:{NAME}/debian"]
    assert copy.manifest_digest(NAME) == built[1]
    assert copy.doit("verify").returncode == 0


def test_a_ref_re_pointed_at_another_blob_fails_verify(copy: Project) -> None:
    refs = ref_files(copy)
    layer0, layer1 = blob(copy, "layer0"), blob(copy, "layer1")
    ref = refs["sha256:" + layer1.name]
    data = json.loads(ref.read_bytes())
    data.update(digest="sha256:" + layer0.name, size=layer0.stat().st_size)
    ref.write_text(json.dumps(data))
    run = copy.doit("verify", check=False)
    assert run.returncode == 1
    diff_id = json.loads(refs["sha256:" + layer0.name].read_bytes())["diffID"]
    one_line(run, f"ref {ref.stem}: names blob sha256:{layer0.name}, whose content is {diff_id}, "
                  f"not the layer {data['diffID']} it was built as")
    assert verify(Store(copy.store), repair=True).problems == [] and not ref.exists()


def test_a_ref_re_pointed_with_the_old_size_fails_verify(copy: Project) -> None:
    refs = ref_files(copy)
    layer0, layer1 = blob(copy, "layer0"), blob(copy, "layer1")
    ref = refs["sha256:" + layer1.name]
    data = json.loads(ref.read_bytes())
    data["digest"] = "sha256:" + layer0.name
    ref.write_text(json.dumps(data))
    run = copy.doit("verify", check=False)
    assert run.returncode == 1
    one_line(run, f"ref {ref.stem}: names blob sha256:{layer0.name} of {layer0.stat().st_size} bytes "
                  f"as {data['size']} bytes")


@pytest.mark.parametrize("directory", ["tmp", "locks", "verified"])
def test_a_scratch_directory_replaced_by_a_file_is_set_aside(copy: Project, built: tuple[Project, str],
                                                             directory: str) -> None:
    path = copy.store / "dream" / directory
    shutil.rmtree(path)
    path.write_text("not mine")
    for ref in ref_files(copy).values():
        ref.unlink()  # every layer is written again, through dream/tmp
    run = copy.doit(f"build:{NAME}")
    assert "Traceback" not in run.stdout + run.stderr
    assert path.is_dir() and path.with_name(directory + ".not-a-directory").read_text() == "not mine"
    assert copy.manifest_digest(NAME) == built[1]
    assert copy.doit("verify").returncode == 0


@pytest.mark.parametrize("directory", ["refs", "sources"])
def test_a_data_directory_replaced_by_a_file_is_one_line(copy: Project, directory: str) -> None:
    path = copy.store / "dream" / directory
    shutil.rmtree(path)
    path.write_text("x")
    (copy.store / "index.json").unlink()  # so the build writes to the store
    run = copy.doit(f"build:{NAME}", check=False)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    one_line(run, f"{path}: not a directory (the store keeps its {directory} there); remove it, or run "
                  "`doit verify --repair`")
    report = verify(Store(copy.store), repair=True)
    assert report.repaired[0] == f"{path} is not a directory: replaced it by an empty directory"


def test_a_tagged_blob_that_is_not_json_is_one_line(copy: Project) -> None:
    store = Store(copy.store)
    bad = store.put_bytes(b'{"config": ', "application/vnd.oci.image.manifest.v1+json")
    index = json.loads((copy.store / "index.json").read_bytes())
    index["manifests"][0].update(digest=bad.digest, size=bad.size)
    (copy.store / "index.json").write_text(json.dumps(index))
    for args in (["verify"], ["gc"]):
        run = copy.doit(*args, check=False)
        assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
        assert f"blob {bad.digest} is not JSON (Expecting value: line 1 column 12 (char 11))" in run.stdout + run.stderr
    assert len(list(store.blobs.iterdir())) == 5  # gc refused: deleted nothing
    with pytest.raises(DreamError, match="is not JSON"):
        docker_archive(store, bad, [f"{NAME}:latest"])
    assert store.tagged(NAME) is None  # so a build writes the image again
    copy.doit(f"build:{NAME}")
    assert copy.doit("verify").returncode == 0


@pytest.mark.parametrize("body", [b"[]", b'{"config": []}', b'{"config": {"digest": "x"}, "layers": []}',
                                  b'{"config": {"mediaType": "a", "digest": "sha256:00", "size": 1}, "layers": {}}'])
def test_a_manifest_of_the_wrong_shape_is_one_line(copy: Project, body: bytes) -> None:
    store = Store(copy.store)
    bad = store.put_bytes(body, "application/vnd.oci.image.manifest.v1+json")
    with pytest.raises(DreamError):
        docker_archive(store, bad, ["x:latest"])
    problems: list[str] = []
    from dream.store.maintenance import _walk
    list(_walk(store, bad, problems))
    assert len(problems) == 1 and "Traceback" not in problems[0]


def test_stale_markers_are_pruned_by_repair(copy: Project) -> None:
    store = Store(copy.store)
    (store.verified / ("0" * 64)).write_text("1 2 3 4")
    verify(store, repair=True)
    assert not (store.verified / ("0" * 64)).exists()


def test_doit_verify_repair_removes_a_corrupt_blob_in_one_line_each(copy: Project) -> None:
    path = blob(copy, "layer1")
    flip(path)
    plain = copy.doit("verify", check=False)
    assert plain.returncode != 0 and "Traceback" not in plain.stdout + plain.stderr
    assert f"corrupt blob {path.name}: content hashes to sha256:" in plain.stderr
    assert "`doit verify --repair` removes what is corrupt" in plain.stdout + plain.stderr
    repaired = copy.doit("verify", "--repair", check=False)
    assert f"repaired: corrupt blob {path.name}: content hashes to sha256:" in repaired.stdout
    assert not path.exists()
