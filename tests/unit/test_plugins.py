"""Plugins (dream/managers/plugins.py): where a renderer or manager name comes from, what a name
declared twice says, and the one line a plugin that cannot be loaded fails its task with.
Entry points are real: a distribution's metadata on ``sys.path``, read by importlib.metadata."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.managers import plugins
from dream.managers.plugins import Plugin, managers, renderers
from dream.recipe.model import Recipe

MODULE = """
from dream.renderers.base import File

class Good:
    name = "good"
    def render(self, plan, target):
        return [File("good.txt", plan["name"])]

class Manager:
    renders = "good"
    def up(self, plan, files, root):
        return 0
    def down(self, plan, files, root):
        return 0

class HalfManager:
    def up(self, plan, files, root):
        return 0

class Refuses:
    def __init__(self):
        raise RuntimeError("no config\\n here")

INSTANCE = Good()
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding the module ``plugmod`` and an installed distribution
    ``dream-plug`` 1.2 whose entry points name it."""
    (tmp_path / "plugmod.py").write_text(MODULE)
    info = tmp_path / "dream_plug-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dream-plug\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [dream.renderers]
        plug = plugmod:Good
        procfile = plugmod:Good

        [dream.managers]
        plug = plugmod:Manager
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._installed.cache_clear()  # entry points are read once a process: read this sys.path
    yield tmp_path
    plugins._installed.cache_clear()
    sys.modules.pop("plugmod", None)  # the next test's plugmod is its own


def recipe(display: str, renderers: dict[str, str] | None = None, managers: dict[str, str] | None = None) -> Recipe:
    return Recipe(Path("/p") / display, display, display.removeprefix("recipes/").removesuffix(".yaml"), {},
                  renderers=renderers or {}, managers=managers or {})


def test_entry_points_are_found_by_name_without_importing_them(site: Path) -> None:
    found = renderers(["compose"], [])
    assert found["plug"].source == "entry point plug = plugmod:Good in dream.renderers of dream-plug 1.2"
    assert "plugmod" not in sys.modules  # `doit list` imports no plugin
    assert found["plug"].load().render({"name": "d"}, None)[0].content == "d"
    assert managers(["procfile", "compose"], [])["plug"].load().renders == "good"


def test_a_plugin_may_not_take_a_built_in_name(site: Path) -> None:
    procfile = renderers(["procfile", "compose"], [])["procfile"]
    assert procfile.conflict == ("renderer 'procfile' is declared twice: built into dream, and entry point "
                                 "procfile = plugmod:Good in dream.renderers of dream-plug 1.2; rename one")
    with pytest.raises(DreamError, match="declared twice"):
        procfile.load()


def test_two_recipes_naming_one_object_declare_it_once_and_two_objects_conflict() -> None:
    same = renderers([], [recipe("recipes/a.yaml", {"mine": "m:Mine"}), recipe("recipes/b.yaml", {"mine": "m:Mine"})])
    assert same["mine"].conflict == "" and same["mine"].source == "recipes/a.yaml: renderers.mine = m:Mine"
    clash = managers([], [recipe("recipes/a.yaml", managers={"mine": "m:Mine"}),
                          recipe("recipes/b.yaml", managers={"mine": "m:Other"}),
                          recipe("recipes/c.yaml", managers={"mine": "m:Third"})])
    assert clash["mine"].conflict == ("manager 'mine' is declared twice: recipes/a.yaml: managers.mine = m:Mine, "
                                      "and recipes/b.yaml: managers.mine = m:Other; rename one")


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("renderer", "nosuch.module:Thing", "cannot load nosuch.module:Thing: ModuleNotFoundError: No module named 'nosuch'"),
    ("renderer", "plugmod:Missing", "cannot load plugmod:Missing: AttributeError:"),
    ("renderer", "plugmod:Manager", "plugmod:Manager is not a renderer (it has no render method)"),
    ("manager", "plugmod:Good", "plugmod:Good is not a manager (it has no up method)"),
    ("renderer", "plugmod:Refuses", "cannot load plugmod:Refuses: RuntimeError: no config here"),
])
def test_a_plugin_that_cannot_be_used_is_one_line_naming_it_and_its_source(site: Path, kind: str, value: str,
                                                                           message: str) -> None:
    plugin = Plugin(kind, "x", "recipes/r.yaml: renderers.x = " + value, value)
    with pytest.raises(DreamError) as raised:
        plugin.load()
    line = str(raised.value)
    assert line.startswith(f"{kind} x (recipes/r.yaml: renderers.x = {value}): ") and message in line
    assert "\n" not in line


def test_an_instance_is_used_as_it_is(site: Path) -> None:
    import plugmod  # type: ignore[import-not-found]
    assert Plugin("renderer", "i", "here", "plugmod:INSTANCE").load() is plugmod.INSTANCE


def test_a_manager_needs_only_up_and_its_failures_are_one_line_naming_it(site: Path) -> None:
    """``down`` is optional (Ctrl-C uses it where it exists); an exception in a plugin's own
    code is its one line, not dream's internal error."""
    plugin = Plugin("manager", "half", "recipes/a.yaml: managers.half = plugmod:HalfManager", "plugmod:HalfManager")
    manager = plugin.load()
    assert plugin.call(manager.up, {}, None, Path("/")) == 0

    def broken(*args: object) -> int:
        raise ValueError("bad\n plan")

    with pytest.raises(DreamError, match=r"^manager half \(recipes/a.yaml: managers.half = plugmod:HalfManager\): "
                                         r"broken failed: ValueError: bad plan$"):
        plugin.call(broken)
