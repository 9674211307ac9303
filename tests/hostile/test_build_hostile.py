"""Issue 12, defects 2, 8, 9 and part of 10: a build under a hostile machine.

2  a layer's key and its bytes come from one read: a file changed between them stops the layer
   with one line and nothing is committed (no blob, no ref, nothing published);
8  a full disk is one line, leaves no temporary blob, and never truncates .dream/doit.json;
9  gc while a build runs keeps what the build made (two real processes);
10 a file growing while its layer is written, an unreadable file or directory: one line.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dream.builders.base import BuildContext
from dream.builders.files import FilesBuilder
from dream.errors import DreamError, Location
from dream.oci.compress import CODECS
from dream.oci.layer import build_layer
from dream.recipe.model import LayerSpec, Recipe
from dream.store.layout import Store
from dream.store.maintenance import gc
from tests.conftest import Project, make_project

FILES = """
image: {name: f}
layers:
  - name: data
    files: [{dest: /data, src: data}]
"""
TWO = """
image: {name: two}
layers:
  - name: small
    files: [{dest: /small, src: small}]
  - name: big
    files: [{dest: /big, src: big}]
"""
CHANGED = "changed while the layer was being built"


def context(items: list[dict[str, Any]]) -> BuildContext:
    layer = LayerSpec("l", "files", items, "", Location("r.yaml"))
    recipe = Recipe(Path("r.yaml"), "r.yaml", "r", {}, [layer])
    return BuildContext(recipe, layer, None, None)  # type: ignore[arg-type]


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"original")
    (src / "b.bin").write_bytes(os.urandom(3000))
    return src


def nothing_committed(store: Store) -> None:
    assert list(store.blobs.iterdir()) == []
    assert list(store.refs.glob("*/*.json")) == []
    assert [p.name for p in store.tmp_dir.iterdir()] == []


def one_line(run: subprocess.CompletedProcess[str], text: str) -> None:
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "Traceback" not in out, out
    assert [line for line in out.splitlines() if text in line], out


# -- 2: the key and the bytes come from one read ---------------------------------------------
@pytest.mark.parametrize("edit", ["same-size", "put-back-later"])
def test_a_same_size_edit_after_the_key_stops_the_layer(tmp_path: Path, edit: str) -> None:
    src = source(tmp_path)
    store = Store(tmp_path / "s").init()
    ctx = context([{"dest": "/app", "src": str(src), "exclude": []}])
    builder = FilesBuilder()
    key = builder.key_inputs(ctx)
    (src / "a.txt").write_bytes(b"poisoned")  # same size, other bytes
    with pytest.raises(DreamError) as caught:
        build_layer(builder.tree(ctx), CODECS["gzip"], 0, store)
    assert str(caught.value) == f"layer r/l: {src / 'a.txt'} {CHANGED}; run the build again"
    nothing_committed(store)
    if edit == "put-back-later":  # the old key must never be bound to the new bytes
        (src / "a.txt").write_bytes(b"original")
        assert FilesBuilder().key_inputs(context([{"dest": "/app", "src": str(src), "exclude": []}])) == key


def test_the_tree_is_the_snapshot_the_key_was_computed_from(tmp_path: Path) -> None:
    src = source(tmp_path)
    ctx = context([{"dest": "/app", "src": str(src), "exclude": []}])
    builder = FilesBuilder()
    builder.key_inputs(ctx)
    (src / "new.txt").write_text("added after the key\n")
    assert "app/new.txt" not in builder.tree(ctx).entries  # what the key does not cover is not built
    assert all(e.sha256 for e in builder.tree(ctx).entries.values() if e.kind == "file")


def test_an_unchanged_tree_builds_the_same_bytes(tmp_path: Path) -> None:
    src = source(tmp_path)
    digests = []
    for name in ("s1", "s2"):
        ctx = context([{"dest": "/app", "src": str(src), "exclude": []}])
        builder = FilesBuilder()
        builder.key_inputs(ctx)
        digests.append(build_layer(builder.tree(ctx), CODECS["gzip"], 0, Store(tmp_path / name).init()).digest)
    assert digests[0] == digests[1]


def test_a_layer_task_with_a_changed_file_commits_and_publishes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dream.tasks import ImageJob, load_recipes
    project = files_project(tmp_path, "x.txt", b"one\n")
    data = project.root / "recipes" / "data"
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("DREAM_STORE", str(project.store))
    monkeypatch.setenv("DREAM_LAYER_CACHE", "off")
    (recipe,) = load_recipes(project.root)
    job = ImageJob(recipe).layers[0]
    old_key = job.key  # doit's up-to-date check computes it first
    (data / "x.txt").write_text("two\n")
    with pytest.raises(DreamError, match=f"x.txt {CHANGED}; run the build again$"):
        job.build()  # doit's task wrapper (dream.boundary) makes it the task's one line
    store = Store(project.store)
    assert list(store.blobs.iterdir()) == [] and list(store.refs.glob("*/*.json")) == []
    again = ImageJob(recipe).layers[0]  # the next build: a fresh key for the new bytes
    assert again.key != old_key and isinstance(again.build(), dict)


# -- 10: a file that grows or shrinks while its layer is written; unreadable sources ----------
@pytest.mark.parametrize("change", [b"original and more", b"orig"])
def test_a_file_that_grows_or_shrinks_while_written_is_one_line(tmp_path: Path, change: bytes) -> None:
    src = source(tmp_path)
    store = Store(tmp_path / "s").init()
    ctx = context([{"dest": "/app", "src": str(src), "exclude": []}])
    builder = FilesBuilder()
    builder.key_inputs(ctx)
    (src / "a.txt").write_bytes(change)
    with pytest.raises(DreamError, match=f"layer r/l: .*a.txt {CHANGED} \\(changed size"):
        build_layer(builder.tree(ctx), CODECS["gzip"], 0, store)
    nothing_committed(store)


def test_a_file_removed_after_the_key_is_one_line(tmp_path: Path) -> None:
    src = source(tmp_path)
    store = Store(tmp_path / "s").init()
    ctx = context([{"dest": "/app", "src": str(src), "exclude": []}])
    builder = FilesBuilder()
    builder.key_inputs(ctx)
    (src / "a.txt").unlink()
    with pytest.raises(DreamError, match="layer r/l: cannot read .*a.txt: No such file"):
        build_layer(builder.tree(ctx), CODECS["gzip"], 0, store)
    nothing_committed(store)


def without_root_powers() -> None:
    """A root test run builds as a non-root one would: without the capabilities that let root
    read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), dropped from the bounding set."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl")


def files_project(tmp_path: Path, name: str, content: bytes) -> Project:
    """A project whose recipe `f` has one files layer over recipes/data, holding ``name``."""
    project = make_project(tmp_path / "p", {"f.yaml": FILES}, with_demo=False)
    (project.root / "recipes" / "data").mkdir()
    (project.root / "recipes" / "data" / name).write_bytes(content)
    return project


@pytest.fixture
def open_project(tmp_path: Path) -> Project:
    return files_project(tmp_path, "ok.txt", b"ok\n")


def build_unprivileged(project: Project) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doit", "build:f"], cwd=project.root, text=True,
                          capture_output=True, env={**os.environ, "DREAM_STORE": str(project.store),
                                                    "DREAM_LAYER_CACHE": "off", "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=without_root_powers if os.getuid() == 0 else None)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_an_unreadable_source_is_one_line_never_skipped(open_project: Project, what: str) -> None:
    data = open_project.root / "recipes" / "data"
    target = data / "secret.txt" if what == "file" else data / "private"
    if what == "file":
        target.write_text("s\n")
    else:
        target.mkdir()
        (target / "inside.txt").write_text("i\n")
    target.chmod(0)
    try:
        run = build_unprivileged(open_project)
    finally:
        target.chmod(0o700)
    one_line(run, f"cannot read {target}: Permission denied")
    assert open_project.doit("verify", check=False).returncode == 0
    index = json.loads((open_project.store / "index.json").read_text())
    assert index["manifests"] == []  # the build did not "succeed" without the directory


# -- 8: a full disk ----------------------------------------------------------------------------
def limited(limit: int) -> Any:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def doit_limited(project: Project, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doit", *args], cwd=project.root, text=True,
                          capture_output=True, env={**os.environ, "DREAM_STORE": str(project.store),
                                                    "DREAM_LAYER_CACHE": "off", "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=limited(limit))


def test_a_full_disk_is_one_line_and_leaves_no_temporary_blob(tmp_path: Path) -> None:
    project = files_project(tmp_path, "r.bin", os.urandom(4 << 20))
    for _ in range(2):  # each failed build used to leak its temporary blob
        run = doit_limited(project, 1 << 20, "build:f")
        one_line(run, "cannot write to the store")
    assert list((project.store / "dream" / "tmp").iterdir()) == []
    assert list((project.store / "dream" / "refs").glob("*/*.json")) == []
    project.doit("build:f")  # space again: it builds
    assert "0 problems" in project.doit("verify").stdout


def test_abort_removes_the_temporary_file_when_close_fails(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()

    class Full:
        closed = False

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            self.closed = True
            raise OSError(28, "No space left on device")

    with pytest.raises(DreamError, match="cannot write to the store .*: No space left on device"):
        with store.blob_writer() as writer:
            writer.file.close()
            writer.file = Full()  # type: ignore[assignment]
            writer.write(b"x" * 10)
    assert list(store.tmp_dir.iterdir()) == []


def test_a_full_disk_never_truncates_doits_database(tmp_path: Path) -> None:
    project = files_project(tmp_path, "x.txt", b"x\n")
    project.doit("build:f")
    db = project.root / ".dream" / "doit.json"
    before = db.read_text()
    run = doit_limited(project, len(before) // 2, "build:f")
    assert "Traceback" not in run.stdout + run.stderr
    assert db.read_text() == before  # the old database, whole
    assert "-- build:f" in project.doit("build:f").stdout  # and every later command works


def test_a_damaged_database_is_set_aside_in_one_line(tmp_path: Path) -> None:
    project = files_project(tmp_path, "x.txt", b"x\n")
    project.doit("build:f")
    db = project.root / ".dream" / "doit.json"
    db.write_text(db.read_text()[:20])  # what an older dream left on a full disk
    run = project.doit("build:f")
    assert "set it aside" in run.stderr and "Traceback" not in run.stderr
    assert Project.ran_layers(run) == []  # the store still knows the layer
    json.loads(db.read_text())


# -- 9: gc and running builds --------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from dream.store.layout import Store
store = Store(Path(sys.argv[1]))
with store.lock("store", shared=True):
    pass
print("registered", flush=True)
time.sleep(120)
"""


def orphan(store: Store, data: bytes) -> str:
    descriptor = store.put_bytes(data, "application/octet-stream")
    store.put_ref("e" * 64, descriptor)
    return descriptor.digest


def test_gc_spares_what_a_running_build_made_and_takes_it_once_the_build_is_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    build = subprocess.Popen([sys.executable, "-c", HOLD, str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert build.stdout is not None and build.stdout.readline().strip() == "registered"
        digest = orphan(store, b"a layer the running build has not tagged yet")
        report = gc(store)
        assert report.removed == 0 and store.has_blob(digest) and store.get_ref("e" * 64) is not None
    finally:
        build.kill()  # SIGKILL: its marker's lock goes with it
        build.wait()
    report = gc(store)
    assert report.removed == 1 and not store.has_blob(digest) and store.get_ref("e" * 64) is None
    assert list((store.meta / "running").glob("*.json")) == []  # the dead build's marker is gone


def test_gc_removes_what_is_older_than_the_oldest_running_build(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    old = orphan(store, b"left by a build long gone")
    for path in [store.blob_path(old), *store.refs.glob("*/*.json")]:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    build = subprocess.Popen([sys.executable, "-c", HOLD, str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert build.stdout is not None and build.stdout.readline().strip() == "registered"
        assert gc(store).removed == 1 and not store.has_blob(old)
    finally:
        build.kill()
        build.wait()


def waiting_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked in `flock` (a ``->`` line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


def gc_while_the_build_is_held(project: Project, build: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """`doit gc` while ``build`` is mid-way: the build is held still (SIGSTOP) before its image is
    tagged, and goes on (SIGCONT) only once gc has either run (the build was between two tasks)
    or queued on a lock the build's running task holds. So gc always meets the build mid-way,
    however fast the build's layers are (a big layer no longer has to buy the time)."""
    os.kill(build.pid, signal.SIGSTOP)
    try:
        if build.poll() is not None:
            pytest.fail(f"the build ended ({build.returncode}) before gc could run:\n{build.communicate()[0]}")
        index = project.store / "index.json"
        names = [m["annotations"]["org.opencontainers.image.ref.name"]
                 for m in json.loads(index.read_text())["manifests"]] if index.exists() else []
        assert "two" not in names, "the build tagged its image before gc could run"
        gc_run = subprocess.Popen([sys.executable, "-m", "doit", "gc"], cwd=project.root, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, "DREAM_STORE": str(project.store)})
        deadline = time.monotonic() + 120
        while gc_run.poll() is None and not waiting_for_a_lock(gc_run.pid):
            if time.monotonic() > deadline:
                gc_run.kill()
                pytest.fail("gc neither ran nor waited for the store lock")
            time.sleep(0.01)
    finally:
        if build.returncode is None:
            os.kill(build.pid, signal.SIGCONT)
    out, err = gc_run.communicate(timeout=300)
    assert gc_run.returncode == 0, out + err
    return subprocess.CompletedProcess(gc_run.args, gc_run.returncode, out, err)


def test_gc_during_a_real_build_never_breaks_it(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"two.yaml": TWO}, with_demo=False)
    recipes = project.root / "recipes"
    (recipes / "small").mkdir()
    (recipes / "small" / "s.txt").write_text("small\n")
    (recipes / "big").mkdir()
    with open(recipes / "big" / "r.bin", "wb") as handle:
        for _ in range(8):
            handle.write(os.urandom(8 << 20))  # 64 MiB: the build is still in its layers when held
    env = {**os.environ, "DREAM_STORE": str(project.store), "DREAM_LAYER_CACHE": "off"}
    build = subprocess.Popen([sys.executable, "-m", "doit", "build:two"], cwd=project.root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    refs = project.store / "dream" / "refs"
    deadline = time.monotonic() + 120
    while not list(refs.glob("*/*.json")) and time.monotonic() < deadline and build.poll() is None:
        time.sleep(0.002)
    gc_run = gc_while_the_build_is_held(project, build)  # the first layer is built, not tagged: gc must keep it
    out, _ = build.communicate(timeout=300)
    assert build.returncode == 0, out + gc_run.stdout
    assert "0 problems" in project.doit("verify").stdout
    assert Project.ran_layers(project.doit("build:two")) == []


def test_gc_during_a_build_keeps_an_up_to_date_layer_that_no_tag_reaches(tmp_path: Path) -> None:
    """The small layer was built long ago and its image untagged since: the build finds it up to
    date (its task never runs), and a gc while the big layer builds must still keep it."""
    project = make_project(tmp_path / "p", {"two.yaml": TWO}, with_demo=False)
    recipes = project.root / "recipes"
    (recipes / "small").mkdir()
    (recipes / "small" / "s.txt").write_text("small\n")
    (recipes / "big").mkdir()
    (recipes / "big" / "r.bin").write_bytes(b"first")
    assert project.doit("build:two").returncode == 0
    store = Store(project.store)
    assert store.untag("two")
    an_hour_ago = time.time() - 3600
    for path in [*store.blobs.iterdir(), *store.refs.glob("*/*.json")]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    with open(recipes / "big" / "r.bin", "wb") as handle:
        for _ in range(8):
            handle.write(os.urandom(8 << 20))  # 64 MiB: gc meets the build while this layer is written
    env = {**os.environ, "DREAM_STORE": str(project.store), "DREAM_LAYER_CACHE": "off"}
    build = subprocess.Popen([sys.executable, "-m", "doit", "build:two"], cwd=project.root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not any(store.tmp_dir.iterdir()) and time.monotonic() < deadline and build.poll() is None:
        time.sleep(0.002)
    gc_run = gc_while_the_build_is_held(project, build)
    out, _ = build.communicate(timeout=300)
    assert build.returncode == 0, out + gc_run.stdout
    assert gc_run.returncode == 0 and "removed 0 blobs" not in gc_run.stdout  # the old image went
    assert "0 problems" in project.doit("verify").stdout
