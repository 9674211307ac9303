"""Issue 12, defect 4: hostile YAML costs one line, not minutes, gigabytes or a RecursionError."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.recipe.yamlsource import MAX_ALIASES, MAX_DEPTH, MAX_VALUES, read_yaml
from tests.conftest import make_project

LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))

CASES = {
    "laughs": (LAUGHS, f"y.yaml:1: YAML aliases expand to too many values (limit {MAX_VALUES})"),
    "recursive-list": ("a: &a [*a]\n", "y.yaml:1: a[0]: recursive YAML alias (a node that contains itself)"),
    "recursive-map": ("a: &a {b: *a}\n", "y.yaml:1: a.b: recursive YAML alias (a node that contains itself)"),
    "recursive-deep": ("a: &a\n  b:\n    - c: *a\n", "y.yaml:1: a.b[0].c: recursive YAML alias (a node that contains itself)"),
    "nested-flow-3000": ("x: " + "[" * 3000 + "]" * 3000 + "\n", f"y.yaml:1: YAML nested too deeply (limit {MAX_DEPTH} levels)"),
    "nested-flow-unclosed": ("x: " + "[" * 200000 + "\n", f"y.yaml:1: YAML nested too deeply (limit {MAX_DEPTH} levels)"),
    "nested-block-2000": ("".join("  " * i + f"k{i}:\n" for i in range(2000)),
                          f"y.yaml:{MAX_DEPTH}: YAML nested too deeply (limit {MAX_DEPTH} levels)"),
    "too-many-aliases": ("a: &a 1\nb: [" + ",".join(["*a"] * (MAX_ALIASES + 1)) + "]\n",
                         f"y.yaml:2: too many YAML aliases (limit {MAX_ALIASES})"),
    "aliases-nest-too-deep": ("a: &a " + "[" * 60 + "1" + "]" * 60 + "\nb: " + "[" * 60 + "*a" + "]" * 60 + "\n",
                              f"y.yaml:1: YAML nested too deeply (limit {MAX_DEPTH} levels)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_yaml_is_one_line(tmp_path: Path, name: str) -> None:
    text, expected = CASES[name]
    (tmp_path / "y.yaml").write_text(text)
    started = time.monotonic()
    with pytest.raises(DreamError) as caught:
        read_yaml(tmp_path / "y.yaml", "y.yaml")
    assert str(caught.value) == expected
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("text,value", [
    ("a: &a {x: 1}\nb: *a\nc: [*a, *a]\n", {"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 1}]}),
    ("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n", None),
    ("a: &a 1\nb: [" + ",".join(["*a"] * MAX_ALIASES) + "]\n", {"a": 1, "b": [1] * MAX_ALIASES}),
])
def test_ordinary_aliases_and_nesting_still_load(tmp_path: Path, text: str, value: object) -> None:
    (tmp_path / "y.yaml").write_text(text)
    data, _ = read_yaml(tmp_path / "y.yaml", "y.yaml")
    if value is not None:
        assert data == value


@pytest.mark.parametrize("name", ["laughs", "recursive-list", "nested-flow-3000"])
def test_a_hostile_recipe_is_one_line_for_doit(tmp_path: Path, name: str) -> None:
    project = make_project(tmp_path / "p", {"evil.yaml": CASES[name][0]})
    run = project.doit("list", check=False)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr + run.stdout
    assert run.stderr.strip() == CASES[name][1].replace("y.yaml", "recipes/evil.yaml")
