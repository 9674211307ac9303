"""Hostile paths (issue 12, defects 1, 5 and the `config_files` part of 11): every path a recipe
writes is contained by one rule (dream/recipe/paths.py). Each refused case asserts the exact
line and that nothing outside (or inside) the project was read, deleted or created; the positive
cases keep working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.presets import PRESET_DIR
from dream.recipe.load import load_recipe
from dream.services.plan import build_plan
from dream.supervisor.plan import plan_from_json
from dream.supervisor.supervisor import SetupError, Supervisor
from tests.conftest import make_project


class World:
    """A project at ``tmp/project`` and, beside it, things a hostile recipe might reach."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp.resolve()
        self.root = self.tmp / "project"
        make_project(self.root, with_demo=False)
        self.outside = self.tmp / "outside"
        self.outside.mkdir()
        (self.outside / "keep.txt").write_text("precious\n")
        (self.outside / "secret.env").write_text("SECRET=1\n")
        (self.tmp / "outside.yaml").write_text("image: {labels: {stolen: 'yes'}}\n")
        (self.root / "keep.txt").write_text("project file\n")
        (self.root / "recipes" / "app").mkdir()
        (self.root / "recipes" / "app" / "main.py").write_text("print('hi')\n")

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def link(self, relative: str, target: Path | str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)

    def snapshot(self) -> dict[str, str]:
        """Every path under tmp (project and outside) with its kind or content."""
        out = {}
        for path in sorted(self.tmp.rglob("*")):
            if path.is_symlink():
                out[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                out[str(path)] = path.read_text(errors="replace")
            else:
                out[str(path)] = "dir"
        return out

    def error(self, text: str, name: str = "bad.yaml") -> str:
        path = self.write(f"recipes/{name}", text)
        before = self.snapshot()
        with pytest.raises(DreamError) as caught:
            load_recipe(path, self.root)
        assert self.snapshot() == before, "loading a refused recipe changed files"
        return str(caught.value)

    def load(self, text: str, name: str = "ok.yaml"):  # type: ignore[no-untyped-def]
        return load_recipe(self.write(f"recipes/{name}", text), self.root)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def files_layer(src: str, kind: str = "files") -> str:
    if kind == "home":
        return f"layers:\n  - name: h\n    home:\n      user: dev\n      files:\n        - {{path: .x, src: '{src}'}}\n"
    return f"layers:\n  - name: l\n    files:\n      - dest: /x\n        src: '{src}'\n"


# -- files[].src and home.files[].src (defect 5) -------------------------------------------------

FILES_AT = "recipes/bad.yaml:5: layers[0].files[0].src"
HOME_AT = "recipes/bad.yaml:6: layers[0].home.files[0].src"


@pytest.mark.parametrize("kind,at", [("files", FILES_AT), ("home", HOME_AT)])
def test_files_src_absolute_is_refused(world: World, kind: str, at: str) -> None:
    for src in ("/etc/shadow", "/etc/passwd", "/"):
        assert world.error(files_layer(src, kind)) == (
            f"{at}: must be a relative path inside the project, not an absolute one")


@pytest.mark.parametrize("kind,at", [("files", FILES_AT), ("home", HOME_AT)])
def test_files_src_climbing_out_is_refused(world: World, kind: str, at: str) -> None:
    for src, resolved in (("../../outside/keep.txt", world.outside / "keep.txt"),
                          ("../../x", world.tmp / "x"),
                          ("../..", world.tmp),
                          ("app/../../../outside", world.outside),
                          ("../../../../../../../../etc/shadow", Path("/etc/shadow"))):
        assert world.error(files_layer(src, kind)) == f"{at}: leaves the project (resolves to {resolved})"


@pytest.mark.parametrize("kind,at", [("files", FILES_AT), ("home", HOME_AT)])
def test_files_src_symlink_out_of_the_project_is_refused(world: World, kind: str, at: str) -> None:
    world.link("recipes/etc", "/etc")
    world.link("recipes/keep", world.outside / "keep.txt")
    world.link("recipes/rel", "../../outside")
    for src, resolved in (("etc", "/etc"), ("etc/shadow", "/etc/shadow"),
                          ("keep", world.outside / "keep.txt"), ("rel/keep.txt", world.outside / "keep.txt")):
        assert world.error(files_layer(src, kind)) == (
            f"{at}: leaves the project through a symlink (resolves to {resolved})")


def test_files_src_with_a_symlinked_parent_folder_is_refused(world: World) -> None:
    world.link("recipes/data", world.outside)
    assert world.error(files_layer("data/keep.txt")) == (
        f"{FILES_AT}: leaves the project through a symlink (resolves to {world.outside / 'keep.txt'})")


def test_files_src_symlink_loop_is_one_line(world: World) -> None:
    world.link("recipes/loop", "loop")
    line = world.error(files_layer("loop"))
    assert line.startswith(f"{FILES_AT}: ") and "\n" not in line


def test_files_src_with_nul_is_one_line(world: World) -> None:
    assert world.error(files_layer("app\\0x").replace("'", '"')) == (
        f"{FILES_AT}: must not contain a NUL character")


def test_every_refused_src_is_reported_at_once(world: World) -> None:
    text = ("layers:\n  - name: l\n    files:\n      - {dest: /a, src: /etc/shadow}\n"
            "      - {dest: /b, src: ../../x}\n      - {dest: /c, src: app}\n")
    assert world.error(text).splitlines() == [
        "recipes/bad.yaml:4: layers[0].files[0].src: must be a relative path inside the project, not an absolute one",
        f"recipes/bad.yaml:5: layers[0].files[1].src: leaves the project (resolves to {world.tmp / 'x'})"]


def test_files_src_inside_the_project_still_works(world: World) -> None:
    world.write("shared/lib.py", "x = 1\n")
    world.link("recipes/inner", "app")                      # a symlink that stays inside
    world.link("recipes/lib", world.root / "shared/lib.py")  # an absolute link, still inside
    recipe = world.load("layers:\n  - name: l\n    files:\n"
                        "      - {dest: /a, src: app}\n      - {dest: /b, src: ../shared/lib.py}\n"
                        "      - {dest: /c, src: inner/main.py}\n      - {dest: /d, src: lib}\n"
                        "      - {dest: /e, src: app/../app/main.py}\n      - {dest: /p, src: ..}\n")
    assert [item["src"] for item in recipe.layers[0].spec] == [
        str(world.root / "recipes/app"), str(world.root / "shared/lib.py"),
        str(world.root / "recipes/app/main.py"), str(world.root / "shared/lib.py"),
        str(world.root / "recipes/app/main.py"), str(world.root)]


def test_a_module_names_files_relative_to_itself(world: World) -> None:
    world.write("layers/mine/dot", "x\n")
    world.write("layers/mine.yaml", "layers:\n  - name: m\n    files:\n      - {dest: /dot, src: mine/dot}\n")
    recipe = world.load("imports: [mine]\n")
    assert recipe.layers[0].spec[0]["src"] == str(world.root / "layers/mine/dot")


def test_a_module_cannot_climb_out_either(world: World) -> None:
    world.write("layers/evil.yaml", "layers:\n  - name: m\n    files:\n      - {dest: /k, src: ../../outside/keep.txt}\n")
    assert world.error("imports: [evil]\n") == (
        f"layers/evil.yaml:4: layers[0].files[0].src: leaves the project (resolves to {world.outside / 'keep.txt'})")


def test_shipped_presets_name_their_own_files(tmp_path: Path) -> None:
    """dream installed outside the project: home-default's dotfiles come from dream's presets."""
    root = tmp_path / "bare"
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "x.yaml").write_text("imports: [home-default, sshd]\n")
    recipe = load_recipe(root / "recipes" / "x.yaml", root)
    home = next(layer for layer in recipe.layers if layer.kind == "home")
    assert [Path(item["src"]).parent for item in home.spec["files"] if "src" in item] == [PRESET_DIR / "home"] * 4
    assert "sshd_config" in {c["path"] for c in recipe.deployments["x"].services["sshd"]["config_files"]}


def test_the_preset_folder_is_not_open_to_a_project(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    (root / "recipes").mkdir(parents=True)
    climb = os.path.relpath(PRESET_DIR / "home" / "bashrc", root / "recipes")
    (root / "recipes" / "x.yaml").write_text(f"layers:\n  - name: l\n    files:\n      - {{dest: /b, src: '{climb}'}}\n")
    with pytest.raises(DreamError) as caught:
        load_recipe(root / "recipes" / "x.yaml", root)
    assert str(caught.value) == (f"recipes/x.yaml:4: layers[0].files[0].src: leaves the project "
                                 f"(resolves to {PRESET_DIR / 'home' / 'bashrc'})")


# -- imports (defect 5) --------------------------------------------------------------------------

def test_import_absolute_is_refused(world: World) -> None:
    assert world.error(f"imports: ['{world.tmp / 'outside.yaml'}']\n") == (
        f"recipes/bad.yaml:1: imports: import '{world.tmp / 'outside.yaml'}' must be a relative "
        "path inside the project, not an absolute one")
    assert world.error("imports: [/abs.yaml]\n") == (
        "recipes/bad.yaml:1: imports: import '/abs.yaml' must be a relative path inside the project, "
        "not an absolute one")


def test_import_climbing_out_is_refused(world: World) -> None:
    assert world.error("imports: [../../outside.yaml]\n") == (
        f"recipes/bad.yaml:1: imports: import '../../outside.yaml' leaves the project "
        f"(resolves to {world.tmp / 'outside.yaml'})")
    world.write("outside-root.yaml", "")  # a recipe at the project's top climbing one level
    world.write("top.yaml", "imports: [../outside.yaml]\n")
    with pytest.raises(DreamError) as caught:
        load_recipe(world.root / "top.yaml", world.root)
    assert str(caught.value) == (f"top.yaml:1: imports: import '../outside.yaml' leaves the project "
                                 f"(resolves to {world.tmp / 'outside.yaml'})")


def test_import_through_a_symlink_out_is_refused(world: World) -> None:
    world.link("recipes/parts/m.yaml", world.tmp / "outside.yaml")
    assert world.error("imports: [parts/m.yaml]\n") == (
        f"recipes/bad.yaml:1: imports: import 'parts/m.yaml' leaves the project through a symlink "
        f"(resolves to {world.tmp / 'outside.yaml'})")


def test_a_project_module_by_name_that_links_out_is_refused(world: World) -> None:
    world.link("layers/stolen.yaml", world.tmp / "outside.yaml")
    assert world.error("imports: [stolen]\n") == (
        f"recipes/bad.yaml:1: imports: import 'stolen' leaves the project through a symlink "
        f"(resolves to {world.tmp / 'outside.yaml'})")


def test_a_nested_module_climbing_out_is_refused_at_its_own_line(world: World) -> None:
    world.write("recipes/parts/m1.yaml", "# comment\nimports: [../../../outside.yaml]\n")
    assert world.error("imports: [parts/m1.yaml]\n") == (
        f"recipes/parts/m1.yaml:2: imports: import '../../../outside.yaml' leaves the project "
        f"(resolves to {world.tmp / 'outside.yaml'})")


def test_relative_imports_inside_the_project_still_work(world: World) -> None:
    world.write("recipes/parts/m1.yaml", "imports: [m2.yaml, ../../shared/m3.yaml]\nimage: {labels: {m1: 'yes'}}\n")
    world.write("recipes/parts/m2.yaml", "image: {labels: {m2: 'yes'}}\n")
    world.write("shared/m3.yaml", "image: {labels: {m3: 'yes'}}\n")
    world.link("recipes/linked.yaml", world.root / "shared/m3.yaml")
    recipe = world.load("imports: [parts/m1.yaml, linked.yaml, debian-python]\n")
    assert {"m1", "m2", "m3"} <= set(recipe.image["labels"])


# -- config_files (defect 11, and 5 for their src) -------------------------------------------------

def config(item: str) -> str:
    return f"services:\n  app:\n    command: x\n    config_files:\n      - {item}\n"


CONFIG_AT = "recipes/bad.yaml:5: services.app.config_files[0]"


def test_config_file_path_climbing_out_is_refused(world: World) -> None:
    for path in ("../x.conf", "../../../../etc/passwd", "a/../../x", ".", "a/..", ".."):
        assert world.error(config(f"{{path: '{path}', content: x}}")) == (
            f"{CONFIG_AT}.path: must name something below the service's config folder (got {path!r})")


def test_config_file_src_out_of_the_project_is_refused(world: World) -> None:
    world.link("recipes/pw", "/etc/passwd")
    assert world.error(config("{path: a, src: /etc/passwd}")) == (
        f"{CONFIG_AT}.src: must be a relative path inside the project, not an absolute one")
    assert world.error(config("{path: a, src: ../../outside/keep.txt}")) == (
        f"{CONFIG_AT}.src: leaves the project (resolves to {world.outside / 'keep.txt'})")
    assert world.error(config("{path: a, src: pw}")) == (
        f"{CONFIG_AT}.src: leaves the project through a symlink (resolves to /etc/passwd)")


def test_config_files_inside_still_work(world: World) -> None:
    world.write("recipes/conf/app.conf", "key = 1\n")
    recipe = world.load("services:\n  app:\n    command: x\n    config_files:\n"
                        "      - {path: sub/app.conf, src: conf/app.conf}\n"
                        "      - {path: a/../b.conf, content: y}\n      - {path: ./c.conf, content: z}\n")
    files = recipe.deployments["ok"].services["app"]["config_files"]
    assert [(f["path"], f["content"]) for f in files] == [
        ("sub/app.conf", "key = 1\n"), ("a/../b.conf", "y"), ("./c.conf", "z")]


# -- volumes (defect 1) ---------------------------------------------------------------------------

def volume(path: str, persistent: str = "false") -> str:
    return f"services:\n  app:\n    command: x\n    volumes:\n      - {{path: '{path}', persistent: {persistent}}}\n"


VOLUME_AT = "recipes/bad.yaml:5: services.app.volumes[0].path"
ROOT = "the deployment's root"


@pytest.mark.parametrize("persistent", ["false", "true"])
def test_volume_that_is_the_root_or_above_is_refused(world: World, persistent: str) -> None:
    for path in (".", "./", "data/..", "..", "../x", "../../outside", "a/../../x", "../project"):
        assert world.error(volume(path, persistent)) == (
            f"{VOLUME_AT}: must name something below {ROOT} (got {path!r})"), path


@pytest.mark.parametrize("persistent", ["false", "true"])
def test_volume_absolute_is_refused(world: World, persistent: str) -> None:
    for path in ("/", "/tmp/x", str(world.outside), str(world.root), str(world.root / "data")):
        assert world.error(volume(path, persistent)) == (
            f"{VOLUME_AT}: must be a relative path inside {ROOT}, not an absolute one"), path


def test_volume_symlink_out_of_the_project_is_refused(world: World) -> None:
    world.link("scratch", world.outside)
    world.link("up", "..")
    assert world.error(volume("scratch")) == (
        f"{VOLUME_AT}: leaves {ROOT} through a symlink (resolves to {world.outside})")
    assert world.error(volume("scratch/sub")) == (
        f"{VOLUME_AT}: leaves {ROOT} through a symlink (resolves to {world.outside / 'sub'})")
    assert world.error(volume("up")) == f"{VOLUME_AT}: leaves {ROOT} through a symlink (resolves to {world.tmp})"


def test_volume_symlink_to_the_root_is_refused(world: World) -> None:
    world.link("self", ".")
    assert world.error(volume("self")) == f"{VOLUME_AT}: must name something below {ROOT}, not {ROOT} itself"


def test_volume_given_as_a_plain_string_is_checked_too(world: World) -> None:
    assert world.error("services:\n  app:\n    command: x\n    volumes: [/var/lib/x]\n") == (
        f"recipes/bad.yaml:4: services.app.volumes[0].path: must be a relative path inside {ROOT}, "
        "not an absolute one")


def test_volumes_below_the_root_still_work(world: World) -> None:
    world.link("linked", "data")  # a symlink that stays inside
    recipe = world.load("services:\n  app:\n    command: x\n    volumes:\n      - data\n"
                        "      - {path: scratch, persistent: false}\n      - a/../b\n      - linked/x\n")
    assert [v["path"] for v in recipe.deployments["ok"].services["app"]["volumes"]] == [
        "data", "scratch", "a/../b", "linked/x"]


@pytest.mark.parametrize("path", [".", "../outside", "/tmp/dream-hostile-x", "escape"])
def test_run_procfile_refuses_and_deletes_nothing(world: World, path: str) -> None:
    """The reproduction of defect 1 through `doit run:procfile`: one line, non-zero, nothing lost."""
    world.link("escape", world.outside)
    world.write("recipes/bad.yaml", volume(path))
    before = world.snapshot()
    run = subprocess.run([sys.executable, "-m", "doit", "run:procfile"], cwd=world.root, text=True,
                         capture_output=True, env={**os.environ, "DREAM_STORE": str(world.tmp / "store")})
    assert run.returncode != 0
    assert "Traceback" not in run.stdout + run.stderr
    assert f"{VOLUME_AT}: " in run.stdout + run.stderr
    after = {k: v for k, v in world.snapshot().items() if "/.dream" not in k and "/store" not in k}
    assert after == {k: v for k, v in before.items() if "/.dream" not in k}
    assert not Path("/tmp/dream-hostile-x").exists()


# -- env_files, log_file, log_dir --------------------------------------------------------------------

def test_env_file_out_of_the_root_is_refused(world: World) -> None:
    world.link("secret.env", world.outside / "secret.env")
    at = "recipes/bad.yaml:4: services.app.env_files[0]"
    service = "services:\n  app:\n    command: x\n    env_files: ['{}']\n"
    assert world.error(service.format("/etc/environment")) == (
        f"{at}: must be a relative path inside {ROOT}, not an absolute one")
    assert world.error(service.format("../outside/secret.env")) == (
        f"{at}: must name something below {ROOT} (got '../outside/secret.env')")
    assert world.error(service.format("secret.env")) == (
        f"{at}: leaves {ROOT} through a symlink (resolves to {world.outside / 'secret.env'})")


def test_log_file_and_log_dir_out_of_the_root_are_refused(world: World) -> None:
    world.link("logs", world.outside)
    service = "services:\n  app:\n    command: x\n    log_file: '{}'\n"
    at = "recipes/bad.yaml:4: services.app.log_file"
    assert world.error(service.format("/tmp/x.log")) == f"{at}: must be a relative path inside {ROOT}, not an absolute one"
    assert world.error(service.format("../x.log")) == f"{at}: must name something below {ROOT} (got '../x.log')"
    assert world.error(service.format("logs/app.log")) == (
        f"{at}: leaves {ROOT} through a symlink (resolves to {world.outside / 'app.log'})")
    deployment = "services:\n  app:\n    command: x\ndeployments:\n  dev:\n    log_dir: '{}'\n"
    at = "recipes/bad.yaml:6: deployments.dev.log_dir"
    assert world.error(deployment.format(".")) == f"{at}: must name something below {ROOT} (got '.')"
    assert world.error(deployment.format("/var/log")) == f"{at}: must be a relative path inside {ROOT}, not an absolute one"
    assert world.error(deployment.format("logs")) == f"{at}: leaves {ROOT} through a symlink (resolves to {world.outside})"


def test_env_files_and_logs_below_the_root_still_work(world: World) -> None:
    recipe = world.load("services:\n  app:\n    command: x\n    env_files: [base.env, conf/run.env]\n"
                        "    log_file: own/app.log\ndeployments:\n  dev:\n    log_dir: logs\n")
    service = recipe.deployments["dev"].services["app"]
    assert (service["env_files"], service["log_file"], recipe.deployments["dev"].log_dir) == (
        ["base.env", "conf/run.env"], "own/app.log", "logs")


# -- the supervisor's own guard: a plan not made by this loader ----------------------------------

def _plan_with_volume(world: World, path: str) -> dict:  # type: ignore[type-arg]
    recipe = world.load("services:\n  app:\n    command: 'true'\n    volumes: [{path: data, persistent: false}]\n")
    plan = build_plan(recipe.deployments["ok"])
    plan["services"][0]["volumes"][0]["path"] = path
    return json.loads(json.dumps(plan))


@pytest.mark.parametrize("path", [".", "..", "../outside", "escape", "self", "/tmp/dream-hostile-y", "OUTSIDE"])
def test_supervisor_never_wipes_outside_its_root(world: World, path: str) -> None:
    world.link("escape", world.outside)
    world.link("self", ".")
    if path == "OUTSIDE":
        path = str(world.outside)
    Path("/tmp/dream-hostile-y").mkdir(exist_ok=True)
    (Path("/tmp/dream-hostile-y") / "keep").write_text("x")
    try:
        supervisor = Supervisor(plan_from_json(_plan_with_volume(world, path)), world.root)
        before = world.snapshot()
        with pytest.raises(SetupError) as caught:
            supervisor.prepare()
        assert "refusing to wipe it" in str(caught.value) and "\n" not in str(caught.value)
        assert world.snapshot() == before
        assert (Path("/tmp/dream-hostile-y") / "keep").read_text() == "x"
    finally:
        shutil.rmtree("/tmp/dream-hostile-y", ignore_errors=True)


def test_supervisor_refuses_to_wipe_a_symlink_inside(world: World) -> None:
    (world.root / "real").mkdir()
    (world.root / "real" / "keep").write_text("x")
    world.link("alias", "real")
    supervisor = Supervisor(plan_from_json(_plan_with_volume(world, "alias")), world.root)
    with pytest.raises(SetupError) as caught:
        supervisor.prepare()
    assert str(caught.value) == "app: volume 'alias' is a symlink; refusing to wipe it"
    assert (world.root / "real" / "keep").read_text() == "x"


def test_supervisor_still_wipes_a_volume_below_its_root(world: World) -> None:
    (world.root / "data").mkdir()
    (world.root / "data" / "old").write_text("stale")
    Supervisor(plan_from_json(_plan_with_volume(world, "data")), world.root).prepare()
    assert (world.root / "data").is_dir() and not (world.root / "data" / "old").exists()
    assert (world.root / "keep.txt").exists()
