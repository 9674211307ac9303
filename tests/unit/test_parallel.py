"""Layer tasks run at once, in threads (`dream.project`): they really overlap, their output
stays whole lines, a failure in one is one line and leaves the other's layer built, Ctrl-C
leaves nothing half-written, ``-n 1`` and ``DREAM_JOBS=1`` still build the same bytes; and what
those tasks share (the store's locks, the running marker, apt's update, download scratch
directories) is safe between threads of one process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dream.download_cache import IN_USE, download_scratch, sweep_stale_downloads
from dream.project import INTERRUPTED
from dream.store.layout import Store
from dream.store.running import register, running_dir
from tests.conftest import Project, make_project

RECIPE = """
image: {name: two}
layers:
  - name: one
    files: [{dest: /one, src: one}]
  - name: two
    files: [{dest: /two, src: two}]
"""
LAYER_LINE = re.compile(r"^two/(one|two): sha256:[0-9a-f]{64} \([\d,]+ bytes\)$")
NOISE = re.compile(r"^(one|two) says [0-9]+ x{40}$")

# planted in the project's dodo.py: each layer's build waits for the other's at a barrier
# (so both run at once, or the build fails after 30 s), writes the moment it passed and 300
# lines in small pieces, then builds; a layer named in BROKEN fails there instead.
PLANT = """
import os, threading, time
import dream.oci.layer  # dream.tasks imports build_layer when a layer builds, from here
_barrier = threading.Barrier(2, timeout=30)
_real = dream.oci.layer.build_layer
def _meeting(tree, *args, **kwargs):
    name = "one" if any(path.startswith("one") for path in tree.entries) else "two"
    _barrier.wait()
    with open(os.path.join(os.environ["MET"], name), "w") as handle:
        handle.write(repr(time.time()))
    for i in range(300):
        print(name, "says", i, end=" ")
        print("x" * 40)
    if name in os.environ.get("BROKEN", ""):
        raise RuntimeError(f"{name} broke")
    return _real(tree, *args, **kwargs)
dream.oci.layer.build_layer = _meeting
"""


def two_layers(base: Path, plant: bool = True) -> Project:
    project = make_project(base, {"two.yaml": RECIPE}, with_demo=False)
    for name in ("one", "two"):
        (project.root / "recipes" / name).mkdir()
        (project.root / "recipes" / name / "file.txt").write_text(f"{name}\n")
    if plant:
        dodo = project.root / "dodo.py"
        dodo.write_text(dodo.read_text() + PLANT)
    return project


def refs(project: Project) -> list[Path]:
    return sorted((project.store / "dream" / "refs").glob("*/*.json"))


def test_two_layers_build_at_the_same_time_and_their_lines_stay_whole(tmp_path: Path) -> None:
    project = two_layers(tmp_path / "p")
    met = tmp_path / "met"
    met.mkdir()
    run = project.doit("build:two", env={"DREAM_JOBS": "2", "MET": str(met)})
    assert sorted(p.name for p in met.iterdir()) == ["one", "two"]  # both passed the barrier
    lines = run.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("two/")) == sorted(
        line for line in lines if LAYER_LINE.match(line))
    assert len([line for line in lines if LAYER_LINE.match(line)]) == 2
    noise = [line for line in lines if " says " in line]
    assert len(noise) == 600 and all(NOISE.match(line) for line in noise), noise[:5]
    assert Project.ran_layers(run) == ["layer:two/one", "layer:two/two"]  # reported in doit's order
    assert run.stderr == ""


def test_parallel_and_serial_builds_give_the_same_image(tmp_path: Path) -> None:
    parallel = two_layers(tmp_path / "a", plant=False)
    parallel.doit("build:two", env={"DREAM_JOBS": "2"})
    serial = two_layers(tmp_path / "b", plant=False)
    run = serial.doit("-n", "1", "build:two")
    assert Project.ran_layers(run) == ["layer:two/one", "layer:two/two"]
    one = two_layers(tmp_path / "c", plant=False)
    one.doit("build:two", env={"DREAM_JOBS": "1"})
    assert parallel.manifest_digest("two") == serial.manifest_digest("two") == one.manifest_digest("two")


def test_a_failure_in_one_parallel_layer_is_one_line_and_the_other_layer_is_kept(tmp_path: Path) -> None:
    project = two_layers(tmp_path / "p")
    met = tmp_path / "met"
    met.mkdir()
    run = project.doit("build:two", check=False, env={"DREAM_JOBS": "2", "MET": str(met), "BROKEN": "two"})
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out
    assert sorted(p.name for p in met.iterdir()) == ["one", "two"]
    broke = [line for line in out.splitlines() if "two broke" in line]
    assert len(broke) == 1 and broke[0].startswith("internal error in layer"), broke
    assert [line for line in run.stdout.splitlines() if LAYER_LINE.match(line)][0].startswith("two/one: ")
    assert len(refs(project)) == 1  # one's layer is in the store, two's is not
    assert list(Store(project.store).tmp_dir.iterdir()) == []
    index = json.loads((project.store / "index.json").read_text())
    assert index["manifests"] == []  # the image is not assembled from half of its layers
    rebuilt = two_layers(tmp_path / "unused", plant=False)  # the same recipe without the plant
    dodo = project.root / "dodo.py"
    dodo.write_text((rebuilt.root / "dodo.py").read_text())
    again = project.doit("build:two", env={"DREAM_JOBS": "2"})
    assert Project.ran_layers(again) == ["layer:two/two"]  # one's layer was kept


BIG = """
image: {name: big}
layers:
  - name: a
    files: [{dest: /a, src: a}]
  - name: b
    files: [{dest: /b, src: b}]
"""


def test_ctrl_c_during_a_parallel_build_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"big.yaml": BIG}, with_demo=False)
    for name in ("a", "b"):
        (project.root / "recipes" / name).mkdir()
        with open(project.root / "recipes" / name / "random.bin", "wb") as handle:
            for _ in range(6):
                handle.write(os.urandom(16 << 20))  # 96 MiB each that does not compress
    process = subprocess.Popen([sys.executable, "-m", "doit", "build:big"], cwd=project.root, text=True,
                               env={**os.environ, "DREAM_STORE": str(project.store), "DREAM_JOBS": "2"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    temporary = project.store / "dream" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list(temporary.glob("blob-*")) if temporary.exists() else []
        if len(partial) == 2 and all(p.exists() and p.stat().st_size > (4 << 20) for p in partial):
            break  # both layers are being written at once
        time.sleep(0.005)
    else:
        process.kill()
        pytest.fail("the build never wrote both layers at once")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT
    assert err.strip() == INTERRUPTED and "Traceback" not in out + err
    assert list(temporary.glob("*")) == [] and refs(project) == []  # no blob, no scratch, no ref
    assert Project.ran_layers(project.doit("build:big")) == ["layer:big/a", "layer:big/b"]


def test_a_bad_dream_jobs_is_one_line(tmp_path: Path) -> None:
    project = two_layers(tmp_path / "p", plant=False)
    run = project.doit("build:two", check=False, env={"DREAM_JOBS": "many"})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip() == "dream: DREAM_JOBS='many': not a number of tasks to run at once (1 or more)"


# -- what the threads share ----------------------------------------------------------------

def test_the_store_locks_hold_between_threads_of_one_process(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    events: list[str] = []

    def hold(name: str, shared: bool, entered: threading.Event, release: threading.Event) -> None:
        with store.lock(name, shared=shared):
            events.append(f"in {shared}")
            entered.set()
            release.wait(10)
        events.append(f"out {shared}")

    def attempt(name: str, shared: bool) -> tuple[threading.Thread, threading.Event, threading.Event]:
        entered, release = threading.Event(), threading.Event()
        thread = threading.Thread(target=hold, args=(name, shared, entered, release))
        thread.start()
        return thread, entered, release

    # exclusive keeps out exclusive and shared
    first, first_in, first_go = attempt("index", False)
    assert first_in.wait(5)
    second, second_in, second_go = attempt("index", False)
    third, third_in, third_go = attempt("index", True)
    assert not second_in.wait(0.3) and not third_in.wait(0.05)
    first_go.set()
    first.join(5)
    assert second_in.wait(5) or third_in.wait(5)
    second_go.set()
    third_go.set()
    second.join(5)
    third.join(5)
    assert not second.is_alive() and not third.is_alive()
    # shared and shared at once; exclusive waits for both
    one, one_in, one_go = attempt("store", True)
    two, two_in, two_go = attempt("store", True)
    assert one_in.wait(5) and two_in.wait(5)
    gc, gc_in, gc_go = attempt("store", False)
    assert not gc_in.wait(0.3)
    one_go.set()
    one.join(5)
    assert not gc_in.wait(0.3)
    two_go.set()
    two.join(5)
    assert gc_in.wait(5)
    gc_go.set()
    gc.join(5)


def test_threads_registering_at_once_make_one_marker(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    start = threading.Barrier(8)

    def build() -> None:
        start.wait(5)
        register(store)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(list(running_dir(store).glob("*.json"))) == 1


def test_gc_in_the_same_command_as_a_build_spares_what_the_build_made(tmp_path: Path) -> None:
    from dream.store.maintenance import gc
    store = Store(tmp_path / "s").init()
    with store.lock("store", shared=True):  # a layer task of this process (another thread)
        descriptor = store.put_bytes(b"a layer not tagged yet", "application/octet-stream")
        store.put_ref("e" * 64, descriptor)
    assert gc(store).removed == 0 and store.has_blob(descriptor.digest)


def test_one_apt_update_for_threads_asking_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dream.debian import apt
    calls: list[float] = []

    def slow_update(self: apt.Apt) -> None:
        calls.append(time.monotonic())
        time.sleep(0.2)
        apt._UPDATED.add(self.root)

    monkeypatch.setattr(apt.Apt, "_update", slow_update)
    monkeypatch.setattr(apt, "_UPDATED", set())
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait(5)
        apt.Apt(root=tmp_path).update()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1
    apt.Apt(root=tmp_path).update(again=True)  # asked again afterwards: fetched again
    assert len(calls) == 2


def test_a_sweep_never_takes_a_scratch_directory_being_set_up(tmp_path: Path) -> None:
    stop = threading.Event()

    def sweep() -> None:  # (it may take a scratch directory once its run has ended: no harm)
        while not stop.is_set():
            sweep_stale_downloads(tmp_path)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        for _ in range(200):
            with download_scratch(tmp_path) as scratch:
                assert (scratch / IN_USE).is_file()
                (scratch / "file").write_text("x")
                assert (scratch / "file").read_text() == "x"
    finally:
        stop.set()
        sweeper.join(5)


def test_bars_of_several_threads_share_one_display(monkeypatch: pytest.MonkeyPatch) -> None:
    from dream import progress
    monkeypatch.setattr(progress, "interactive", lambda: True)
    start, errors = threading.Barrier(3), []

    def layer(name: str) -> None:
        try:
            start.wait(5)
            with progress.bar(name, 100) as advance:  # rich allows one live display: one for all
                for _ in range(20):
                    advance(5)
                    time.sleep(0.005)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=layer, args=(f"img/{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and progress._display is None and progress._bars == 0


def test_a_parallel_build_on_a_terminal_draws_bars_and_finishes(tmp_path: Path) -> None:
    """On a terminal (bars drawn) two layers at once once deadlocked rich's refresh thread
    against the line lock; the build must finish and print each layer's line whole."""
    import pty
    project = make_project(tmp_path / "p", {"big.yaml": BIG}, with_demo=False)
    for name in ("a", "b"):
        (project.root / "recipes" / name).mkdir()
        (project.root / "recipes" / name / "random.bin").write_bytes(os.urandom(24 << 20))
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    process = subprocess.Popen([sys.executable, "-m", "doit", "build:big"], cwd=project.root,
                               env={**env, "DREAM_STORE": str(project.store), "DREAM_JOBS": "2"},
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break  # the terminal closed: the build ended
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    try:
        assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        process.kill()
    text = b"".join(chunks).decode(errors="replace")
    assert re.search(r"big/a: sha256:[0-9a-f]{64} \([\d,]+ bytes\)\r\n", text)
    assert re.search(r"big/b: sha256:[0-9a-f]{64} \([\d,]+ bytes\)\r\n", text)
    assert "MB" in text  # a bar was drawn
