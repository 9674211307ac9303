"""One fetch plan per image (`dream.fetch_plan`): the first layer build starts every download
the image's unbuilt layers need, each layer waits for its own files only, a file in flight is
fetched once, a failure belongs to the layer that needs the file, a layer cache turns the plan
off, and Ctrl-C ends the downloader children. The downloader here is a stub (this is our own
scheduling); tests/integration/test_fetch_plan_pip.py runs the real pip."""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dream import fetch_plan
from dream.errors import DreamError
from dream.fetch_plan import BIG, Download, FetchPlan, Source, batches
from tests.conftest import make_project

RECIPE = """
image: {name: three}
layers:
  - name: a
    files: [{dest: /a, src: a}]
  - name: b
    files: [{dest: /b, src: b}]
  - name: c
    files: [{dest: /c, src: c}]
"""
FILES = {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1", "shared"]}


class StubDownloader:
    """A downloader whose runs record their items and block until ``gate`` opens; an item
    named in ``broken`` fails the whole run, as pip's one exit status does."""

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.gate = threading.Event()
        self.runs: list[list[str]] = []
        self.cached: set[str] = set()
        self.broken = broken
        self.lock = threading.Lock()
        self.source = Source("stub", self.fetch, lambda item: item in self.cached, splits=True)

    def fetch(self, items: list[str]) -> None:
        with self.lock:
            self.runs.append(sorted(items))
        assert self.gate.wait(10), "the test never opened the gate"
        bad = [item for item in items if item in self.broken]
        if bad:
            raise DreamError(f"pip could not download the locked wheels: no {', '.join(bad)}")
        with self.lock:
            self.cached.update(items)

    def fetched(self) -> list[str]:
        with self.lock:
            return sorted(item for run in self.runs for item in run)

    def downloads(self, names: list[str], size: int = 1000) -> list[Download]:
        return [Download(f"sha-{name}", size, name, self.source) for name in names]


@pytest.fixture(autouse=True)
def no_downloads_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no file in flight, even after another test failed midway."""
    monkeypatch.setattr(fetch_plan, "_IN_FLIGHT", {})


def image_with_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: StubDownloader,
                    files: dict[str, list[str]] = FILES) -> Any:
    """An ImageJob of three small files layers whose parts say they need ``files``."""
    from dream.tasks import ImageJob, load_recipes
    project = make_project(tmp_path / "p", {"three.yaml": RECIPE}, with_demo=False)
    for name in ("a", "b", "c"):
        (project.root / "recipes" / name).mkdir(exist_ok=True)
        (project.root / "recipes" / name / "file.txt").write_text(f"{name}\n")
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("DREAM_STORE", str(project.store))
    monkeypatch.setenv("DREAM_LAYER_CACHE", "off")
    (recipe,) = load_recipes(project.root)
    image = ImageJob(recipe)
    for job in image.layers:
        assert job.part is not None
        job.part = dataclasses.replace(job.part, downloads=functools.partial(stub.downloads, files[job.name]))
    return image


def build_in_thread(job: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = job.build()
        except DreamError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_the_first_layer_build_requests_every_file_of_the_image_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = StubDownloader()
    image = image_with_stub(tmp_path, monkeypatch, stub)
    first, outcome = build_in_thread(image.layers[0])
    everything = sorted(name for names in FILES.values() for name in names)
    wait_until(lambda: stub.fetched() == everything, "the plan did not request every file")
    assert first.is_alive() and "result" not in outcome  # the first layer waits for its own files
    assert stub.runs == [everything]  # small files of one source: one run
    stub.gate.set()
    first.join(10)
    assert "result" in outcome
    for job in image.layers[1:]:
        job.build()
    assert stub.fetched() == everything  # nothing fetched twice, nothing fetched by a layer


def test_a_layer_already_built_requests_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dream.tasks import ImageJob
    stub = StubDownloader()
    stub.gate.set()
    image = image_with_stub(tmp_path, monkeypatch, stub)
    for job in image.layers:
        job.build()
    (Path("recipes") / "b" / "file.txt").write_text("b changed\n")  # a new key: b builds again
    stub.runs.clear()
    stub.cached.clear()  # even with an empty download cache, a and c (in the store) need nothing
    again = ImageJob(image.recipe)
    for job in again.layers:
        assert job.part is not None
        job.part = dataclasses.replace(job.part, downloads=functools.partial(stub.downloads, FILES[job.name]))
    again.layers[1].build()
    assert stub.runs == [["b1"]]


def test_a_file_in_flight_is_waited_for_not_downloaded_again() -> None:
    stub = StubDownloader()
    one, two = FetchPlan(), FetchPlan()
    one.start(lambda: [lambda: stub.downloads(["x", "shared"])])
    two.start(lambda: [lambda: stub.downloads(["shared", "y"])])
    wait_until(lambda: len(stub.runs) == 2, "both plans should have started a run")
    assert sorted(stub.runs) == [["shared", "x"], ["y"]]
    stub.gate.set()
    one.wait(stub.downloads(["x", "shared"]))
    two.wait(stub.downloads(["shared", "y"]))
    assert stub.fetched() == ["shared", "x", "y"]


def test_a_failure_is_the_failure_of_the_layer_that_needs_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = StubDownloader(broken=("b1",))
    stub.gate.set()
    image = image_with_stub(tmp_path, monkeypatch, stub)
    a, b, c = image.layers
    a.build()
    with pytest.raises(DreamError, match=r"^pip could not download the locked wheels: no b1$"):
        b.build()
    c.build()
    assert stub.runs[0] == ["a1", "a2", "b1", "c1", "shared"]  # one run, failed: retried per layer
    assert sorted(stub.runs[1:]) == [["a1", "a2"], ["b1"], ["c1", "shared"]]
    assert fetch_plan._IN_FLIGHT == {}  # a later build tries b1 again


def test_a_layer_cache_turns_the_plan_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class EmptyCache:
        def lookup(self, *args: Any) -> None:
            return None

        def publish(self, *args: Any) -> None:
            return None

    stub = StubDownloader()
    image = image_with_stub(tmp_path, monkeypatch, stub)
    image.cache = EmptyCache()
    image.layers[0].build()  # the cache may hold the other layers: nothing is fetched ahead
    assert stub.runs == []


def test_big_files_get_runs_of_their_own_and_apt_runs_once() -> None:
    pip = StubDownloader()
    apt = Source("apt", lambda items: None, lambda item: False, splits=False)
    planned = [(0, Download("deb1", BIG * 2, "deb1", apt)), (0, Download("deb2", 10, "deb2", apt)),
               (1, Download("huge", BIG, "huge", pip.source)), (2, Download("tiny", 10, "tiny", pip.source)),
               (3, Download("small", 10, "small", pip.source))]
    runs = [[download.key for _, download in run] for run in batches(planned)]
    assert runs == [["deb1", "deb2"], ["huge"], ["tiny", "small"]]


def test_stop_ends_a_running_downloader_child() -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        result["run"] = fetch_plan.run_download([sys.executable, "-c", "import time; time.sleep(60)"])

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: fetch_plan._CHILDREN, "the child never started")
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), fetch_plan.stopped_by_ctrl_c():
        raise KeyboardInterrupt
    thread.join(10)
    assert time.monotonic() - started < 5 and result["run"].returncode < 0
    assert fetch_plan._CHILDREN == set() and not fetch_plan._STOPPING.is_set()
    assert fetch_plan.run_download(["true"]).returncode == 0  # downloads are accepted again


def test_a_run_waiting_for_a_slot_when_stopped_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_plan, "_SLOTS", threading.Semaphore(1))
    stub = StubDownloader()
    plan = FetchPlan()
    plan.start(lambda: [lambda: stub.downloads(["one"], BIG), lambda: stub.downloads(["two"], BIG)])
    wait_until(lambda: len(stub.runs) == 1, "no run started")
    threading.Timer(0.3, stub.gate.set).start()  # the running run ends while stop waits for it
    fetch_plan.stop()
    (ran,), (waited,) = stub.runs[0], {"one", "two"} - set(stub.runs[0])
    assert len(stub.runs) == 1
    plan.wait(stub.downloads([ran]))
    with pytest.raises(DreamError, match="^downloads interrupted$"):
        plan.wait(stub.downloads([waited]))


def test_only_the_layers_of_the_selected_tasks_are_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`doit layer:three/a` (or a build whose other layers are not selected) fetches a's files only."""
    from types import SimpleNamespace

    from dream import tasks
    from dream.project import note_selection
    task = lambda deps=(): SimpleNamespace(task_dep=list(deps), setup_tasks=[])  # noqa: E731
    dispatcher = SimpleNamespace(selected_tasks=["layer:three/a"], tasks={
        "layer:three/a": task(), "layer:three/b": task(), "build:three": task(["layer:three/a", "layer:three/b"])})
    monkeypatch.setattr(tasks, "_selected_layers", None)
    note_selection(dispatcher)
    assert tasks._selected_layers == {"layer:three/a"}
    stub = StubDownloader()
    image = image_with_stub(tmp_path, monkeypatch, stub)
    stub.gate.set()
    image.layers[0].build()
    assert stub.fetched() == sorted(FILES["a"])
    dispatcher.selected_tasks = ["build:three"]
    note_selection(dispatcher)
    assert tasks._selected_layers == {"layer:three/a", "layer:three/b"}
