"""`run` layers for real (issue 18): gcc compiles a C extension and Python writes a generated
module, each in a sandbox over a Debian layer with the compiler; the image runs both.

One project (outside the repository) is locked and built once for the module; the tests then
change it, or add recipes over the same Debian layer (same spec, same lock entry: the store
has it), so only the layers a test is about get built.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from dream.project import INTERRUPTED
from tests.conftest import REPO, Project, make_project, require, require_docker

pytestmark = pytest.mark.integration

DATA = REPO / "tests" / "data" / "run-layer"
DEBIAN = """\
  - name: debian
    debian:
      packages: [python3, python3-dev, gcc, libc6-dev, python3-pip, python3-setuptools]
      exclude: [/usr/share/doc/*, /usr/share/man/*, /usr/share/locale/*, /usr/share/info/*]
"""
RECIPE = """\
image:
  name: cext
  cmd: [python3, /app/main.py]
layers:
""" + DEBIAN + """\
  - name: compile
    run:
      command: [sh, -c, 'mkdir -p /opt/ext && gcc -shared -fPIC -O2 $(python3-config --includes) /src/fast.c -o /opt/ext/fast$(python3-config --extension-suffix)']
      inputs: [{src: ext/fast.c, dest: /src/fast.c}]
      outputs: [/opt/ext]
  - name: generate
    run:
      command: [python3, /src/gen.py]
      inputs: [{src: ext/gen.py, dest: /src/gen.py}]
      outputs: [/opt/gen]
  - name: app
    files: [{src: app, dest: /app}]
"""


def _project(base: Path, recipes: dict[str, str]) -> Project:
    project = make_project(base, recipes, with_demo=False)
    for folder in ("ext", "app"):
        shutil.copytree(DATA / folder, project.root / "recipes" / folder)
    return project


def _add_recipe(project: Project, name: str, step: str) -> None:
    """A recipe ``name``: the module's Debian layer (its lock entry too: the store has that
    layer) and one run layer ``step`` (YAML of its fields, indented under ``run:``)."""
    text = f"image: {{name: {name}}}\nlayers:\n{DEBIAN}  - name: {name}\n    run:\n{step}"
    (project.root / "recipes" / f"{name}.yaml").write_text(text)
    entry = json.loads((project.root / "recipes" / "cext.lock.json").read_text())
    entry["layers"] = {"debian": entry["layers"]["debian"]}
    (project.root / "recipes" / f"{name}.lock.json").write_text(json.dumps(entry))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    require("apt-get")
    require("unshare")
    project = _project(tmp_path_factory.mktemp("run") / "p", {"cext.yaml": RECIPE})
    project.doit("lock:cext")
    run = project.doit("build:cext")
    assert set(Project.ran_layers(run)) == {"layer:cext/debian", "layer:cext/compile", "layer:cext/generate",
                                            "layer:cext/app"}
    return project


def _layer_digests(project: Project, name: str) -> list[str]:
    manifest = json.loads((project.store / "blobs" / "sha256" / project.manifest_digest(name)[7:]).read_text())
    return [layer["digest"] for layer in manifest["layers"]]


def test_the_image_runs_the_compiled_extension_and_the_generated_module(built: Project) -> None:
    require_docker()
    built.doit("load:cext")
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "cext:latest"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["5", "16"]  # fast.add(2, 3) from gcc's .so, squares[4] from gen.py


SDIST = "MarkupSafe-2.1.5.tar.gz"  # a real project with a C extension, built from its sdist (no wheel)


def test_a_package_without_a_wheel_builds_from_its_sdist_in_a_step(built: Project) -> None:
    require_docker()
    sdist = built.root / "recipes" / "sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--no-binary", ":all:", "--no-deps", "markupsafe==2.1.5", "-d", str(sdist)],
                   check=True, capture_output=True, timeout=300)
    # In a fixed folder: pip's own build folder has a random name, which gcc writes into the
    # .so's debug information (check:sd found it: two runs, two .so files).
    install = (f"cd /tmp && tar xzf /src/{SDIST} && cd {SDIST.removesuffix('.tar.gz')} && python3 -m pip install "
               "--no-index --no-build-isolation --no-deps --no-cache-dir --break-system-packages .")
    _add_recipe(built, "sd", f"      command: [sh, -c, {json.dumps(install)}]\n"
                             "      inputs: [{src: sdist, dest: /src}]\n      outputs: [/usr/local]\n")
    assert "layer:sd/sd: reproducible" in built.doit("check:sd").stdout
    built.doit("load:sd")
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "sd", "python3", "-c",
                          "import markupsafe, markupsafe._speedups as s; print(s.__file__, markupsafe.escape('<a>'))"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    speedups = "/usr/local/lib/python3.11/dist-packages/markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so"
    assert run.stdout.split() == [speedups, "&lt;a&gt;"]  # the C extension, not the pure-Python fallback


def test_two_builds_from_empty_stores_give_the_same_digest(built: Project, tmp_path: Path) -> None:
    again = _project(tmp_path / "again", {"cext.yaml": RECIPE})
    shutil.copy(built.root / "recipes" / "cext.lock.json", again.root / "recipes" / "cext.lock.json")
    again.doit("build:cext")
    assert again.manifest_digest("cext") == built.manifest_digest("cext")
    run = again.doit("check:cext")
    assert "layer:cext/compile: reproducible" in run.stdout and "layer:cext/generate: reproducible" in run.stdout


def test_check_names_the_file_a_clock_step_wrote(built: Project) -> None:
    _add_recipe(built, "clock", "      command: [sh, -c, 'mkdir /out && date +%s%N > /out/now && echo same > /out/fixed']\n"
                                "      outputs: [/out]\n")
    run = built.doit("check:clock", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out
    line = next(line for line in out.splitlines() if "NOT reproducible" in line)
    assert "layer:clock/clock" in line and "/out/now" in line and "/out/fixed" not in line


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A TCP server on the host's 127.0.0.1; what it accepted."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[object] = []

    def serve() -> None:
        try:
            while True:
                accepted.append(server.accept())
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()  # the daemon thread stays in accept(): closing does not wake it


def test_a_step_has_no_network_not_even_the_hosts_loopback(built: Project,
                                                           listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    probe = (f"import socket, pathlib; out = pathlib.Path('/out'); out.mkdir()\n"
             f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5); r = 'connected'\n"
             f"except OSError as e:\n    r = 'failed: ' + str(e)\n(out / 'net').write_text(r)\n"
             f"open('/etc/stray', 'w').write('dropped')\n")
    _add_recipe(built, "netless", f"      command: [python3, -c, {json.dumps(probe)}]\n      outputs: [/out]\n")
    run = built.doit("build:netless")
    assert "netless/netless: dropped 1 writes outside its outputs: /etc/stray" in run.stdout
    layer = _layer_digests(built, "netless")[-1]
    listing = subprocess.run(["tar", "-xzOf", str(built.store / "blobs" / "sha256" / layer[7:]), "out/net"],
                             capture_output=True, text=True, check=True).stdout
    assert listing.startswith("failed: "), listing
    assert accepted == []


def test_a_failing_step_is_one_line_and_leaves_nothing(built: Project) -> None:
    _add_recipe(built, "boom", "      command: [sh, -c, 'echo compiling; echo the compiler broke >&2; exit 3']\n"
                               "      outputs: [/out]\n")
    refs = sorted((built.store / "dream" / "refs").glob("*/*.json"))
    run = built.doit("build:boom", check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in out
    assert ("recipes/boom.yaml:7: layers.boom.run: `sh -c 'echo compiling; echo the compiler broke >&2; "
            "exit 3'` exited with code 3; its last lines:") in out
    assert "  compiling" in out and "  the compiler broke" in out
    assert sorted((built.store / "dream" / "refs").glob("*/*.json")) == refs  # nothing new in the store
    assert list((built.store / "dream" / "tmp").iterdir()) == []  # no scratch, no sandbox left
    assert "0 problems" in built.doit("verify").stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(built.store) not in mounts  # the sandbox's mounts ended with it


def test_a_change_above_keeps_the_steps_and_one_below_runs_them_again(built: Project) -> None:
    main = built.root / "recipes" / "app" / "main.py"
    main.write_text(main.read_text() + "# changed\n")
    assert Project.ran_layers(built.doit("build:cext")) == ["layer:cext/app"]
    gen = built.root / "recipes" / "ext" / "gen.py"
    gen.write_text(gen.read_text() + "# changed\n")
    assert Project.ran_layers(built.doit("build:cext")) == ["layer:cext/generate"]  # its input; compile is below
    recipe = built.root / "recipes" / "cext.yaml"
    recipe.write_text(recipe.read_text().replace("/usr/share/info/*]", "/usr/share/info/*, /usr/share/lintian/*]"))
    ran = Project.ran_layers(built.doit("build:cext"))
    assert ran == ["layer:cext/debian", "layer:cext/compile", "layer:cext/generate"]


def test_ctrl_c_during_a_step_is_one_line_and_kills_the_sandbox(built: Project) -> None:
    _add_recipe(built, "slow", "      command: [sh, -c, 'mkdir /out && touch /out/started && exec sleep 600']\n"
                               "      outputs: [/out]\n")
    process = subprocess.Popen([sys.executable, "-m", "doit", "build:slow"], cwd=built.root, text=True,
                               env={**os.environ, "DREAM_STORE": str(built.store)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((built.store / "dream" / "tmp").glob("build-*/sandbox/upper/out/started")):
        assert time.monotonic() < deadline and process.poll() is None, "the step never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT and "Traceback" not in out + err
    assert err.strip() == INTERRUPTED
    assert subprocess.run(["pgrep", "-f", "exec sleep 600"], capture_output=True).returncode == 1  # none left
    assert list((built.store / "dream" / "tmp").iterdir()) == []


def test_gc_empties_the_unpacked_layers_and_the_next_step_unpacks_them_again(built: Project) -> None:
    assert list((built.store / "dream" / "rootfs").iterdir())
    built.doit("gc")
    assert not (built.store / "dream" / "rootfs").exists()
    assert "reproducible" in built.doit("check:cext").stdout
