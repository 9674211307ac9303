"""`doit inspect:python-app` on a real build: not built is one line naming the build; after a
build, the layers, biggest files and config; after a change of the app, the app layer is
``changed`` and the Debian layer ``same``; ``--svg`` draws one bar per layer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import Seed, make_project

pytestmark = pytest.mark.integration


def test_inspect_python_app(tmp_path: Path, python_app_seed: Seed) -> None:
    project = make_project(tmp_path / "p", seed=python_app_seed)
    missing = project.doit("inspect:python-app", check=False)
    assert missing.returncode != 0
    assert "run `doit build:python-app`" in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stdout + missing.stderr

    project.doit("build:python-app")
    first = project.doit("inspect:python-app", env={"COLUMNS": "200"}).stdout
    assert "reading 2 of 2 layers" in first
    assert "no earlier build of this tag" in first
    assert "/usr/bin/python3.11" in first and "GREETING=hello from dream" in first
    assert '["python3"]' in first and "/app" in first
    again = project.doit("inspect:python-app", env={"COLUMNS": "200"}).stdout
    assert "reading" not in again  # every layer's statistics come from the cache

    main = project.root / "recipes" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# changed\n")
    project.doit("build:python-app")
    svg = project.root / "layers.svg"
    changed = project.doit("inspect:python-app", "--svg", str(svg), env={"COLUMNS": "200"}).stdout
    rows = {line.split("│")[2].strip(): line for line in changed.splitlines() if line.count("│") > 8}
    assert "same" in rows["debian"] and "changed" in rows["app"], changed
    assert "reading 1 of 2 layers" in changed  # only the new app layer is read

    root = ET.parse(svg).getroot()
    groups = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "layer"]
    assert [(g.get("data-name"), g.get("data-kind"), g.get("data-change")) for g in groups] == \
        [("debian", "debian", "same"), ("app", "files", "changed")]

    bad = project.doit("inspect:python-app", "--svg", str(project.root / "nowhere" / "x.svg"), check=False)
    assert bad.returncode != 0 and "no directory" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
