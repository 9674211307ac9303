"""The rendered Procfile and .env mean to real honcho what the plan means to dream's
supervisor: the same argv and the same environment, for values with `$`, quotes, `#`, spaces,
tabs, backslashes and newlines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_project, require

TRICKY = ["$HOME and ${PATH} and $(id)", "it's \"quoted\"", "a # not a comment", "  two  spaces  ",
          "line one\nline two\n", "tab\there", "back\\slash", "", "`uname`;|&<>*?"]

DUMP = """\
import json, os, sys
keys = [k for k in os.environ if k.startswith("T_") or k in ("PORT", "DREAM_SERVICE", "DREAM_INSTANCE", "DREAM_DEPLOYMENT")]
with open(os.environ["T_OUT"], "w") as f:
    json.dump({"argv": sys.argv[1:], "env": {k: os.environ[k] for k in keys}, "cwd": os.getcwd()}, f)
"""


def recipe(out_dir: Path) -> str:
    service_env = {f"T_S{i}": value for i, value in enumerate(TRICKY)}
    deployment_env = {f"T_D{i}": value for i, value in enumerate(TRICKY) if "\\" not in value}
    return json.dumps({  # JSON is YAML: no quoting doubts in the test itself
        "deployments": {"tricky": {"env": deployment_env, "port_base": 7000,
                                   "services": ["argv", "shell"]}},
        "services": {
            "argv": {"command": [sys.executable, "dump.py", *TRICKY],
                     "env": {**service_env, "T_OUT": str(out_dir / "argv.json")},
                     "working_dir": "work", "allowed_to_exit": True},
            "shell": {"command": f"{sys.executable} dump.py \"$T_D0\"", "args": TRICKY,
                      "env": {**service_env, "T_OUT": str(out_dir / "shell.json")},
                      "working_dir": "work", "allowed_to_exit": True},
        }})


@pytest.fixture
def tricky(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    project = make_project(tmp_path / "p", {"tricky.yaml": recipe(out)}, with_demo=False)
    (project.root / "work").mkdir()
    (project.root / "work" / "dump.py").write_text(DUMP)
    return project, out


def results(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("argv", "shell")}


def test_honcho_and_the_supervisor_give_the_same_argv_and_env(tricky) -> None:
    honcho = require("honcho")
    project, out = tricky
    project.doit("render:procfile", "-d", "tricky")
    procfile_dir = project.root / "build" / "tricky" / "procfile"
    # Services allowed to exit sleep on under honcho (which stops everything when one exits).
    honcho_run = subprocess.Popen([honcho, "-d", str(procfile_dir), "start"], cwd=project.root,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while not all((out / f"{n}.json").exists() for n in ("argv", "shell")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the files are written in one go, but let them be closed
    finally:
        honcho_run.send_signal(signal.SIGINT)
        honcho_run.communicate(timeout=15)
    under_honcho = results(out)
    for name in ("argv", "shell"):
        (out / f"{name}.json").unlink()

    run = project.doit("run:procfile", "-d", "tricky")
    assert "every service has finished" in run.stdout
    under_dream = results(out)

    assert under_dream["argv"]["argv"] == TRICKY  # exactly as written: nothing expanded or split
    assert under_dream["shell"]["argv"] == [TRICKY[0]] + TRICKY  # "$T_D0" expanded by the shell
    assert under_dream["argv"]["env"]["T_S4"] == "line one\nline two\n"
    assert under_dream["argv"]["env"]["PORT"] == "7000" and under_dream["shell"]["env"]["PORT"] == "7100"
    assert under_dream["argv"]["cwd"] == str(project.root / "work")
    assert under_dream == under_honcho


def test_dotenv_refuses_what_honcho_would_change(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"bad.yaml": json.dumps({
        "services": {"x": {"command": ["true"]}},
        "deployments": {"bad": {"env": {"WINDOWS_PATH": "C:\\new\\table"}}}})}, with_demo=False)
    run = project.doit("render:procfile", "-d", "bad", check=False)
    assert run.returncode != 0
    assert "WINDOWS_PATH: a backslash before n or t cannot be written to .env" in run.stdout + run.stderr
    assert not (project.root / "build" / "bad" / "procfile" / ".env").exists()
