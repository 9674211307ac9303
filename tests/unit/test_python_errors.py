"""uv's failures as one line at the recipe line that caused them (`dream.python.blame`)."""

from __future__ import annotations

from pathlib import Path

from dream.python.blame import RequirementSites
from dream.python.resolve import ResolveError, _failure
from dream.python.target import PythonTarget
from dream.recipe.load import load_recipe

TARGET = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")

# uv 0.9's words (captured from real runs against the package index)
UNKNOWN = """error: No solution found when resolving dependencies
  cause: Because reqeusts was not found in the package registry and you require reqeusts, we can conclude that your requirements are unsatisfiable.
"""
NO_VERSION = """error: No solution found when resolving dependencies
  cause: Because there is no version of requests==99.0 and you require requests==99.0, we can conclude that your requirements are unsatisfiable.
"""
CONFLICT = """error: No solution found when resolving dependencies
  cause: Because flask>=3.0.0,<=3.0.3 depends on werkzeug>=3.0.0 and flask>=3.1.0 depends on werkzeug>=3.1, we can conclude that flask>=3.0.0 depends on werkzeug>=3.0.0.
         And because you require werkzeug<1 and flask>=3, we can conclude that your requirements are unsatisfiable.
"""
TRANSITIVE = """error: No solution found when resolving dependencies
  cause: Because nosuchdep was not found in the package registry and mypkg==1.0 depends on nosuchdep, we can conclude that mypkg==1.0 cannot be used.
"""

RECIPE = """python: {version: "3.11"}
layers:
  - name: tools
    files: [{dest: /a, content: x}]
  - name: app
    comment: the web service
    python:
      requirements:
        - flask
        - Reqeusts_X>=1
        - requests==99.0
"""


def sites(tmp_path: Path) -> RequirementSites:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "web.yaml").write_text(RECIPE)
    recipe = load_recipe(tmp_path / "recipes" / "web.yaml", tmp_path)
    return RequirementSites(recipe.layer("app"))


def test_uvs_report_is_parsed_for_the_causes_a_recipe_line_explains() -> None:
    unknown = _failure(UNKNOWN, "the requirements of layer 'app'", TARGET)
    assert (unknown.unknown, unknown.no_version) == ("reqeusts", "")
    assert "\n" not in str(unknown)
    assert str(unknown).startswith("cannot resolve the requirements of layer 'app' for Python 3.11 "
                                   "(manylinux_2_36_x86_64): No solution found when resolving dependencies cause: ")
    assert _failure(NO_VERSION, "x", TARGET).no_version == "requests==99.0"
    conflict = _failure(CONFLICT, "x", TARGET)
    assert (conflict.unknown, conflict.no_version) == ("", "")
    assert "you require werkzeug<1 and flask>=3" in str(conflict) and "\n" not in str(conflict)
    assert _failure(TRANSITIVE, "x", TARGET).unknown == ""  # not the recipe's name: not blamed


def test_an_unknown_name_points_at_its_list_item(tmp_path: Path) -> None:
    error = sites(tmp_path).blame(ResolveError("raw", unknown="reqeusts-x"))
    assert str(error) == ("recipes/web.yaml:10: layers.app.python.requirements[1]: no distribution "
                          "'Reqeusts_X' on the package index (looked in pip's configured indexes and find-links)")


def test_a_missing_version_points_at_its_list_item(tmp_path: Path) -> None:
    error = sites(tmp_path).blame(ResolveError("raw", no_version="requests==99.0"))
    assert str(error) == ("recipes/web.yaml:11: layers.app.python.requirements[2]: "
                          "no release on the package index matches 'requests==99.0'")


def test_other_failures_keep_uvs_summary_at_the_layer(tmp_path: Path) -> None:
    error = sites(tmp_path).blame(_failure(CONFLICT, "the requirements of layer 'app'", TARGET))
    assert str(error).startswith("recipes/web.yaml:5: layers.app: cannot resolve the requirements of layer 'app'")
    assert "\n" not in str(error)


def test_a_requirement_written_in_an_imported_module_points_there(tmp_path: Path) -> None:
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "webmod.yaml").write_text(RECIPE)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "web.yaml").write_text("imports: [webmod]\nimage: {name: web}\n")
    recipe = load_recipe(tmp_path / "recipes" / "web.yaml", tmp_path)
    error = RequirementSites(recipe.layer("app")).blame(ResolveError("raw", unknown="reqeusts-x"))
    assert str(error).startswith("layers/webmod.yaml:10: layers.app.python.requirements[1]: no distribution")
