"""Issue 12, "no traceback, ever": every doit task of dream ends in one line, whatever breaks.

A fault is planted in a real `doit` run through the project's dodo.py (it patches one function
before dream makes the tasks), so the whole path — doit, dream's task wrappers, the store — is
the one a user runs; the line, the exit code and the log with the details are checked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dream.boundary import check, failure_line, guard_task
from dream.errors import DreamError
from dream.store.layout import Store
from tests.conftest import Project, make_project

FILES = """
image: {name: f}
layers:
  - name: only
    files: [{dest: /etc/motd, content: "hello\\n"}]
"""
FAULTS = {
    "enospc-in-put-ref": ("dream.store.layout", "Store.put_ref",
                          "raise OSError(28, 'No space left on device', '/store/dream/refs/x.json')"),
    "bug-in-a-builder": ("dream.builders.files", "FilesBuilder.tree",
                         "raise RuntimeError('a bug\\nover two lines')"),
    "bug-in-assembly": ("dream.oci.image", "write_image", "raise KeyError('config')"),
}


def planted(tmp_path: Path, fault: str) -> Project:
    module, attribute, statement = FAULTS[fault]
    project = make_project(tmp_path / "p", {"f.yaml": FILES}, with_demo=False)
    owner, _, name = attribute.rpartition(".")
    dodo = project.root / "dodo.py"
    dodo.write_text(f"import importlib\n"
                    f"def _fault(*args, **kwargs):\n    {statement}\n"
                    f"_owner = importlib.import_module({module!r})\n"
                    + (f"_owner = getattr(_owner, {owner!r})\n" if owner else "")
                    + f"setattr(_owner, {name!r}, _fault)\n" + dodo.read_text())
    return project


def lines_of(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]


def test_a_full_disk_when_the_ref_is_written_is_one_line_with_the_file(tmp_path: Path) -> None:
    project = planted(tmp_path, "enospc-in-put-ref")
    run = project.doit("build:f", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out
    line = next(line for line in lines_of(run) if "No space left on device" in line)
    assert line.startswith("/store/dream/refs/x.json: No space left on device (details in "), line
    log = project.root / line.split("(details in ")[1].rstrip(")")
    assert "Traceback" in log.read_text() and "put_ref" in log.read_text()


@pytest.mark.parametrize("fault", ["bug-in-a-builder", "bug-in-assembly"])
def test_a_bug_is_one_line_pointing_at_a_log(tmp_path: Path, fault: str) -> None:
    project = planted(tmp_path, fault)
    run = project.doit("build:f", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out
    line = next(line for line in lines_of(run) if "internal error in " in line)
    assert "please report it" in line and "(details in .dream/log/" in line, line
    log = project.root / line.split("(details in ")[1].split(")")[0]
    assert "Traceback" in log.read_text()
    if fault == "bug-in-a-builder":
        assert "RuntimeError: a bug over two lines" in line  # one line, even from two
    assert list(Store(project.store).tmp_dir.iterdir()) == []  # nothing half-written kept


def test_the_log_folder_keeps_only_the_newest_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for attempt in range(25):
        failure_line(RuntimeError(f"bug {attempt}"), "test")
    logs = sorted((tmp_path / ".dream" / "log").iterdir())
    assert len(logs) <= 20 and not [log for log in logs if log.name.startswith(".new-")]


def test_a_user_mistake_stays_its_own_line_without_a_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert failure_line(DreamError("r.yaml:3: layers.0: bad"), "t") == "r.yaml:3: layers.0: bad"
    assert not (tmp_path / ".dream").exists()


def test_with_no_room_for_the_log_the_line_still_comes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dream").write_text("a file where the folder should be")
    line = failure_line(OSError(28, "No space left on device", "/x"), "t")
    assert line == "/x: No space left on device"


def test_a_failing_uptodate_check_runs_the_task_and_keeps_its_repr() -> None:
    class Named:
        def __call__(self, task: object, values: object) -> bool:
            raise OSError(13, "Permission denied")

        def __repr__(self) -> str:
            return "the store's image is current"

    task = guard_task({"name": "x", "actions": [lambda: None, "echo shell"], "uptodate": [Named(), True]}, "t")
    utd = task["uptodate"][0]
    assert isinstance(utd, check) and utd(None, None) is False and repr(utd) == "the store's image is current"
    assert task["uptodate"][1] is True and task["actions"][1] == "echo shell"


def test_a_wrapped_action_keeps_the_parameters_doit_passes_by_name() -> None:
    import inspect

    def push(to: list[str]) -> None:
        raise DreamError(f"nowhere to push {to}")

    guarded = guard_task({"actions": [push]}, "push:x")["actions"][0]
    assert list(inspect.signature(guarded).parameters) == ["to"]
    assert guarded(to=["a"]).message == "nowhere to push ['a']"
