"""doit's everyday verbs on dream's tasks: clean, forget, info, Ctrl-C, and bad directory
settings. Real doit runs on files-only images (no apt, no engine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dream.project import INTERRUPTED
from dream.shell import shell_argv
from tests.conftest import Project, make_project

RECIPE = """
image: {name: two}
layers:
  - name: one
    files: [{dest: /one, src: one}]
  - name: two
    files: [{dest: /two, src: two}]
"""


@pytest.fixture
def built(tmp_path: Path) -> Project:
    project = make_project(tmp_path / "p", {"two.yaml": RECIPE}, with_demo=False)
    for name in ("one", "two"):
        (project.root / "recipes" / name).mkdir()
        (project.root / "recipes" / name / "file.txt").write_text(f"{name}\n")
    project.doit("build:two")
    return project


def refs(project: Project) -> list[Path]:
    return sorted((project.store / "dream" / "refs").glob("*/*.json"))


def blobs(project: Project) -> int:
    return len(list((project.store / "blobs" / "sha256").iterdir()))


def tags(project: Project) -> list[str]:
    index = json.loads((project.store / "index.json").read_text())
    return [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]


def status(project: Project, task: str) -> str:
    out = project.doit("info", task, check=False).stdout  # doit info exits 1 when "run"
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("status"))


def test_clean_build_untags_drops_refs_keeps_blobs_and_the_next_build_rebuilds(built: Project) -> None:
    digest, stored = built.manifest_digest("two"), blobs(built)
    assert len(refs(built)) == 2
    run = built.doit("clean", "build:two")
    assert ("build:two: untagged the image and dropped 2 layer refs; the next build makes them "
            "again (blobs stay until `doit gc`)") in run.stdout
    assert tags(built) == [] and refs(built) == [] and blobs(built) == stored
    assert status(built, "build:two") == "run"
    rebuilt = built.doit("build:two")
    assert Project.ran_layers(rebuilt) == ["layer:two/one", "layer:two/two"]
    assert built.manifest_digest("two") == digest  # the same bytes again


def test_clean_one_layer_rebuilds_that_layer_only(built: Project) -> None:
    run = built.doit("clean", "layer:two/two")
    assert "layer:two/two: dropped its ref; the next build makes it again" in run.stdout
    assert Project.ran_layers(built.doit("build:two")) == ["layer:two/two"]


def test_gc_reclaims_what_clean_left(built: Project) -> None:
    built.doit("clean", "build:two")
    assert "gc: removed 4 blobs" in built.doit("gc").stdout  # two layers, the config, the manifest
    assert blobs(built) == 0


def test_forget_rechecks_the_store_without_rebuilding(built: Project) -> None:
    built.doit("forget")
    again = built.doit("build:two")
    assert Project.ran_layers(again) == [] and "-- build:two" in again.stdout


def test_info_tells_the_truth_about_the_image(built: Project) -> None:
    assert status(built, "build:two") == "up-to-date"
    assert "-- build:two" in built.doit("build:two").stdout  # a no-op writes nothing
    (built.root / "recipes" / "two" / "file.txt").write_text("changed\n")
    assert status(built, "build:two") == "run"
    built.doit("build:two")
    assert status(built, "build:two") == "up-to-date"
    recipe = built.root / "recipes" / "two.yaml"
    recipe.write_text(recipe.read_text().replace("image: {name: two}", "image: {name: two, env: {A: b}}"))
    assert status(built, "build:two") == "run"  # same layers, another config: a build would change it


def test_ctrl_c_mid_layer_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"big.yaml": "image: {name: big}\nlayers:\n  - name: data\n"
                                            "    files: [{dest: /data, src: data}]\n"}, with_demo=False)
    data = project.root / "recipes" / "data"
    data.mkdir()
    with open(data / "random.bin", "wb") as handle:
        for _ in range(8):
            handle.write(os.urandom(16 << 20))  # 128 MiB that does not compress: > 1 s still to write at 8 MiB
    process = subprocess.Popen([sys.executable, "-m", "doit", "build:big"], cwd=project.root, text=True,
                               env={**os.environ, "DREAM_STORE": str(project.store)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    temporary = project.store / "dream" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list(temporary.glob("blob-*")) if temporary.exists() else []
        if partial and partial[0].stat().st_size > (8 << 20):
            break
        time.sleep(0.005)
    else:
        process.kill()
        pytest.fail("the build never started writing its layer")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT  # it exits as interrupted, for shells and CI
    assert err.strip() == INTERRUPTED and "Traceback" not in out + err
    assert list(temporary.glob("*")) == [] and refs(project) == []
    assert Project.ran_layers(project.doit("build:big")) == ["layer:big/data"]


def one_line(project: Project, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    run = project.doit("build:two", check=False, env=env)
    assert run.returncode == 1 and run.stdout == ""
    return run


def test_a_file_as_dream_store_is_one_line(built: Project, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    run = one_line(built, {"DREAM_STORE": str(tmp_path / "file")})
    assert run.stderr == (f"dream: DREAM_STORE={tmp_path / 'file'}: not a directory (it is a file); "
                          "point DREAM_STORE at a directory\n")
    run = one_line(built, {"DREAM_STORE": str(tmp_path / "file" / "store")})
    assert run.stderr == (f"dream: DREAM_STORE={tmp_path / 'file' / 'store'}: cannot create it: "
                          f"{tmp_path / 'file'} is a file, not a directory\n")


def test_a_file_as_dream_cache_is_one_line(built: Project, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    run = one_line(built, {"DREAM_CACHE": str(tmp_path / "file")})
    assert run.stderr == (f"dream: DREAM_CACHE={tmp_path / 'file'}: not a directory (it is a file); "
                          "point DREAM_CACHE at a directory\n")


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` as a user who cannot write root's directories (root ignores permissions)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed (util-linux)")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


@pytest.mark.parametrize("setting", ["DREAM_STORE", "DREAM_CACHE"])
def test_an_unwritable_directory_setting_is_one_line(setting: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="dream-verbs-"))
    try:
        project = make_project(base / "p", {"two.yaml": RECIPE}, with_demo=False)
        for writable in (project.root / ".dream", base / "store", base / "cache"):
            writable.mkdir()
            writable.chmod(0o777)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        for path in (base, project.root, project.root / "recipes"):
            path.chmod(0o755)
        if os.geteuid() != 0:
            locked.chmod(0o555)
        env = {**os.environ, "DREAM_STORE": str(base / "store"), "DREAM_CACHE": str(base / "cache"),
               setting: str(locked / "sub")}
        run = subprocess.run(unprivileged([sys.executable, "-m", "doit", "build:two"]), cwd=project.root,
                             capture_output=True, text=True, env=env)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert run.stderr == f"dream: {setting}={locked / 'sub'}: cannot create it: {locked} is not writable by this user\n"
        env[setting] = str(locked)
        run = subprocess.run(unprivileged([sys.executable, "-m", "doit", "build:two"]), cwd=project.root,
                             capture_output=True, text=True, env=env)
        assert run.stderr == f"dream: {setting}={locked}: the directory is not writable by this user\n"
    finally:
        shutil.rmtree(base)


def test_shell_command_line() -> None:
    cuda = {"Entrypoint": ["/usr/local/bin/dream-cuda-env"], "User": "root"}
    argv = shell_argv("sha256:abc", cuda, "dev", Path("/src"), "", "", gpus=True, tty=True)
    assert argv == ["docker", "run", "--rm", "-i", "-t", "--gpus", "all", "-v", "/src:/workspace", "-w",
                    "/workspace", "--user", "dev", "--entrypoint", "/usr/local/bin/dream-cuda-env",
                    "sha256:abc", "bash"]
    plain = shell_argv("sha256:abc", {"Entrypoint": ["python3"]}, "root", Path("/src"), "id", "none",
                       gpus=False, tty=False, env_file="/root/.config/dream/env.sh")
    assert plain == ["docker", "run", "--rm", "-i", "--network", "none", "-e",
                     "BASH_ENV=/root/.config/dream/env.sh", "-v", "/src:/workspace", "-w",
                     "/workspace", "--user", "root", "--entrypoint", "bash", "sha256:abc", "-c", "id"]
