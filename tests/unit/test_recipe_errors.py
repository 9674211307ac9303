"""Malformed recipes: each gives one clear line with file, line and field; never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dream.errors import DreamError, UserErrors
from dream.recipe.load import load_recipe

FILES = {"app/x.txt": "x\n"}

# (name, recipe text, extra module files, expected line, expected text in the message)
CASES = [
    ("wrong-type", "image:\n  name: a\n  env: [A, B]\n", {}, "bad.yaml:3: image.env", "must be a mapping"),
    ("unknown-field", "image:\n  name: a\n  colour: red\n", {}, "bad.yaml:3: image.colour", "unknown field"),
    ("unknown-top", "imagee: {}\n", {}, "bad.yaml:1: imagee", "unknown field"),
    ("missing-import", "imports: [nope]\n", {}, "bad.yaml:1: imports", "import 'nope' not found"),
    ("import-cycle", "imports: [parts/m1.yaml]\n",
     {"parts/m1.yaml": "imports: [m2.yaml]\n", "parts/m2.yaml": "imports: [m1.yaml]\n"},
     "parts/m2.yaml:1: imports", "import cycle: parts/m1.yaml -> parts/m2.yaml -> parts/m1.yaml"),
    ("bad-yaml", "image:\n  name: [a\n  tags: x\n", {}, "bad.yaml:", "invalid YAML"),
    ("layer-two-kinds", "layers:\n  - name: l\n    files: [{dest: /a, content: x}]\n    debian: {packages: [bash]}\n",
     {}, "bad.yaml:2: layers[0]", "(got files, debian)"),
    ("mode-as-int", "layers:\n  - name: l\n    files:\n      - {dest: /a, content: x, mode: 644}\n", {},
     "bad.yaml:4: layers[0].files[0].mode", 'quoted octal strings'),
    ("relative-dest", "layers:\n  - name: l\n    files:\n      - {dest: a, content: x}\n", {},
     "bad.yaml:4: layers[0].files[0].dest", "must be an absolute path (starting with /)"),
    ("missing-src", "layers:\n  - name: l\n    files:\n      - {dest: /a, src: nothing-here}\n", {},
     "bad.yaml:4: layers[0].files[0].src", "no such file or directory: nothing-here"),
    ("duplicate-key", "image:\n  name: a\n  name: b\n", {}, "bad.yaml:3: image", "duplicate key 'name'"),
    ("bad-port", "image:\n  ports: [http]\n", {}, "bad.yaml:2: image.ports[0]", "must be a port such as 8080, 8080/tcp or 53/udp"),
    ("duplicate-layer", "layers:\n  - {name: l, files: [{dest: /a, content: x}]}\n  - {name: l, files: [{dest: /b, content: y}]}\n",
     {}, "bad.yaml:3: layers[1].name", "used twice"),
    ("cuda-version", "layers:\n  - name: c\n    cuda: {version: '11.8', components: [cudart]}\n",
     {}, "bad.yaml:3: layers[0].cuda.version", "must be a CUDA version such as 12, 12.8 or 12.8.1"),
    ("cuda-version-float", "layers:\n  - name: c\n    cuda: {version: 12.8, components: [cudart]}\n",
     {}, "bad.yaml:3: layers[0].cuda.version", 'write versions quoted, e.g. "12.8" (unquoted, 12.10 reads as 12.1)'),
    ("cuda-component", "layers:\n  - name: c\n    cuda:\n      version: '12'\n      components: [cudart, tensorrt]\n",
     {}, "bad.yaml:5: layers[0].cuda.components[1]", "unallowed value tensorrt"),
    ("home-user", "layers:\n  - name: h\n    home:\n      user: Dev\n",
     {}, "bad.yaml:4: layers[0].home.user", "must be a login name: up to 32 lowercase letters"),
    ("bad-suite", "layers:\n  - name: d\n    debian: {packages: [bash], suite: Trixie}\n",
     {}, "bad.yaml:3: layers[0].debian.suite", "must be a Debian suite codename such as bookworm or trixie"),
    ("owner-past-32-bits", "layers:\n  - name: l\n    files:\n      - {dest: /a, content: x, owner: '4294967296:0'}\n",
     {}, "bad.yaml:4: layers[0].files[0].owner", "uid and gid must be at most 4294967294 (got 4294967296:0)"),
    ("port-zero", "image:\n  ports: [0]\n", {}, "bad.yaml:2: image.ports[0]", "a port is 1 to 65535 (got 0)"),
    ("port-too-big", "image:\n  ports: ['70000/udp']\n", {}, "bad.yaml:2: image.ports[0]", "a port is 1 to 65535 (got 70000)"),
    ("created-not-a-date", "image:\n  created: '2024-13-45T00:00:00Z'\n", {}, "bad.yaml:2: image.created",
     "must be a real UTC time such as 2026-01-31T12:00:00Z (got '2024-13-45T00:00:00Z')"),
    ("dest-climbs", "layers:\n  - name: l\n    files:\n      - {dest: /../../etc/passwd, content: x}\n", {},
     "bad.yaml:4: layers[0].files[0].dest", "must not climb with '..' (got '/../../etc/passwd')"),
    ("home-file-climbs", "layers:\n  - name: h\n    home:\n      user: u\n      files:\n        - {path: ../../etc/passwd, content: x}\n", {},
     "bad.yaml:6: layers[0].home.files[0].path", "must not climb with '..' (got '../../etc/passwd')"),
    ("dest-nul", "layers:\n  - name: l\n    files:\n      - {dest: \"/a\\0b\", content: x}\n", {},
     "bad.yaml:4: layers[0].files[0].dest", "must not contain a NUL character"),
    ("dest-root", "layers:\n  - name: l\n    files:\n      - {dest: /, content: x}\n", {},
     "bad.yaml:4: layers[0].files[0].dest", "a file or symlink cannot replace the image root"),
    ("python-requirements", "layers:\n  - name: p\n    python: {requirements: []}\n",
     {}, "bad.yaml:3: layers[0].python.requirements", "min length is 1"),
    ("run-no-outputs", "layers:\n  - name: r\n    run:\n      command: [make]\n", {},
     "bad.yaml:3: layers[0].run.outputs", "required field"),
    ("run-relative-output", "layers:\n  - name: r\n    run:\n      command: make\n      outputs: [out]\n", {},
     "bad.yaml:5: layers[0].run.outputs[0]", "must be an absolute path (starting with /)"),
    ("run-empty-command", "layers:\n  - name: r\n    run:\n      command: []\n      outputs: [/out]\n", {},
     "bad.yaml:4: layers[0].run.command", "min length is 1"),
    ("run-missing-input", "layers:\n  - name: r\n    run:\n      command: make\n      outputs: [/out]\n"
     "      inputs: [{src: nowhere, dest: /src}]\n", {},
     "bad.yaml:6: layers[0].run.inputs[0].src", "no such file or directory: nowhere"),
]


def _write(tmp_path: Path, text: str, modules: dict[str, str]) -> Path:
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    for name, body in modules.items():
        (recipes / name).parent.mkdir(exist_ok=True)
        (recipes / name).write_text(body)
    path = recipes / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text,modules,where,message", CASES, ids=[c[0] for c in CASES])
def test_one_clear_line(tmp_path: Path, name: str, text: str, modules: dict[str, str], where: str, message: str) -> None:
    path = _write(tmp_path, text, modules)
    with pytest.raises(DreamError) as caught:
        load_recipe(path, tmp_path / "recipes")
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(where), lines[0]
    assert message in lines[0], lines[0]


def test_all_errors_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "image:\n  name: Bad Name\n  user: 5\nlayers:\n  - name: l\n", {})
    with pytest.raises(UserErrors) as caught:
        load_recipe(path, tmp_path / "recipes")
    text = str(caught.value)
    assert "bad.yaml:2: image.name" in text
    assert "bad.yaml:3: image.user: must be a string" in text
    assert "bad.yaml:5: layers[0]: needs exactly one of" in text


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[5]], ids=["wrong-type", "cycle", "bad-yaml"])
def test_doit_prints_no_traceback(tmp_path: Path, case: tuple) -> None:  # type: ignore[type-arg]
    _, text, modules, where, message = case
    _write(tmp_path, text, modules)
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "dodo.py").write_text((repo / "dodo.py").read_text())
    run = subprocess.run([sys.executable, "-m", "doit", "list"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr + run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("recipes/" + where), lines[0]
    assert message.replace("parts/", "recipes/parts/") in lines[0]


def _patterns(schema: object) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["regex"]} if isinstance(schema.get("regex"), str) else set()
        return found.union(*(_patterns(value) for value in schema.values()))
    if isinstance(schema, (list, tuple)):
        return set().union(*(_patterns(value) for value in schema))
    return set()


def test_every_pattern_of_both_schemas_has_words() -> None:
    from dream.recipe.rules import FORMS
    from dream.recipe.schema import RECIPE
    patterns = _patterns(RECIPE)
    assert len(patterns) > 15  # the walk reaches the nested schemas (services included)
    assert sorted(p for p in patterns if p not in FORMS) == []


def test_a_file_name_that_is_no_image_name_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "Bad Name.yaml"
    path.write_text("layers:\n  - name: l\n    files: [{dest: /a, content: x}]\n")
    with pytest.raises(DreamError) as caught:
        load_recipe(path, tmp_path)
    assert str(caught.value) == ("recipes/Bad Name.yaml: the image is named after the file, and 'Bad Name' is no "
                                 "image name (lowercase letters, digits and . _ - between them): set image.name "
                                 "or rename the file")
    path.write_text("image: {name: good}\n" + path.read_text())
    assert load_recipe(path, tmp_path).name == "good"
