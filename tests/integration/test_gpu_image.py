"""The reference GPU image end to end: real wheels from the package index, real apt, the real
Docker engine. No GPU is needed (the GPU check lives in test_gpu_check.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from dream.oci.read import open_layer
from dream.store import Descriptor, Store
from tests.conftest import Project, make_project, require, require_docker

pytestmark = pytest.mark.integration
IMAGE = "gpu-image:latest"


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The reference recipe built once into an empty store, and loaded into Docker."""
    require("apt-get")
    require_docker()
    project = make_project(tmp_path_factory.mktemp("gpu") / "project", with_demo=False, with_gpu=True)
    project.doit("build:gpu-image")
    project.doit("load:gpu-image")
    return project


def test_the_image_is_the_golden_one(gpu: Project) -> None:
    """Built from its lock into an empty store: the digest tests/golden records (see its README)."""
    from tests.integration.test_golden import golden
    assert gpu.manifest_digest("gpu-image") == golden("gpu-image")


def docker_run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none", *args],
                          capture_output=True, text=True, check=check)


def manifest(project: Project) -> dict:
    digest = project.manifest_digest("gpu-image")
    return json.loads((project.store / "blobs/sha256" / digest[7:]).read_text())


def test_numpy_cuda_libraries_and_cupy_work_in_the_image(gpu: Project) -> None:
    assert docker_run(IMAGE, "python3", "/app/main.py").stdout.splitlines()[0] == "cpu sum: 66.0"
    probe = ("import ctypes, numpy, cupy\n"
             "for lib in ('libcudart.so.12', 'libcublas.so.12', 'libcublasLt.so.12', 'libnvrtc.so.12'):\n"
             "    ctypes.CDLL(lib)\n"
             "print(numpy.__version__, cupy.__version__, cupy.cuda.runtime.runtimeGetVersion())\n"
             "print(cupy.cuda.get_cuda_path() or '', numpy.dot(numpy.ones(3), numpy.ones(3)))")
    out = docker_run(IMAGE, "python3", "-c", probe).stdout.splitlines()
    numpy_version, cupy_version, runtime = out[0].split()
    lock = json.loads((gpu.root / "recipes/gpu-image.lock.json").read_text())
    locked = {w["name"]: w["version"] for entry in lock["layers"].values() for w in entry.get("wheels", [])}
    assert (numpy_version, cupy_version) == (locked["numpy"], locked["cupy-cuda12x"])
    assert runtime == "12090"  # CUDA runtime 12.9 (1000 × major + 10 × minor), as locked
    assert out[1].endswith("3.0")
    # console scripts run: their shebang is the image's interpreter
    assert docker_run(IMAGE, "numpy-config", "--version").stdout.strip() == locked["numpy"]


def test_plain_programs_find_cuda_through_usr_local_cuda(gpu: Project) -> None:
    out = docker_run("--entrypoint", "sh", IMAGE, "-c",
                     "readlink -f /usr/local/cuda/lib64/libcublas.so; cat /etc/ld.so.conf.d/dream-cuda.conf").stdout
    assert out.splitlines()[0] == "/usr/local/lib/python3.11/dist-packages/nvidia/cublas/lib/libcublas.so.12"
    assert "/usr/local/cuda/lib64" in out.splitlines()[1:]


def test_home_user_dotfiles_and_tools(gpu: Project) -> None:
    script = ("id; sudo -n id -u; stat -c '%U %a' ~ ~/.bashrc; echo \"editor=$EDITOR\"; "
              "tmux -V; command -v vi less ps; getent group sudo")
    out = docker_run("--user", "dev", IMAGE, "bash", "-lc", script).stdout.splitlines()
    assert out[0].startswith("uid=1000(dev) gid=1000(dev)") and "27(sudo)" in out[0]
    assert out[1] == "0"  # passwordless sudo
    assert out[2:4] == ["dev 750", "dev 644"]
    assert out[4] == "editor=vi"  # the user's env, from ~/.config/dream/env.sh
    assert out[5].startswith("tmux ")
    assert out[6:9] == ["/usr/bin/vi", "/usr/bin/less", "/usr/bin/ps"]
    assert out[9].endswith(":dev")
    root_accounts = docker_run("--entrypoint", "getent", IMAGE, "passwd", "root", "nobody").stdout
    assert root_accounts.startswith("root:x:0:0") and "nobody:x:65534" in root_accounts


def test_nvidia_runtime_env_and_labels(gpu: Project) -> None:
    config = json.loads(subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                                       text=True, check=True).stdout)[0]["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.9"
    assert env["CUDA_VERSION"].startswith("12.9.")
    assert env["LD_LIBRARY_PATH"].split(":")[0] == "/usr/local/cuda/lib64"
    assert config["Labels"]["com.nvidia.cuda.version"] == env["CUDA_VERSION"]
    assert config["Labels"]["com.nvidia.volumes.needed"] == "nvidia_driver"
    assert config["Entrypoint"] == ["/usr/local/bin/dream-cuda-env"]
    assert config["User"] == "root"  # the supervisor; the services run as dev
    assert config["Cmd"] == ["python3", "-m", "dream_supervisor", "/etc/dream/deployments/gpu-image.json"]


def test_docker_run_starts_the_services_as_dev(gpu: Project) -> None:
    name = "dream-test-gpu-services"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--pull", "never", "--network", "none", "--name", name, IMAGE],
                   check=True, capture_output=True)
    try:
        logs = ""
        for _ in range(150):
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
            if "notebook is ready" in logs and "sshd" in logs and "not starting sshd" in logs:
                break
            time.sleep(0.2)
        assert "notebook is ready" in logs and "not starting sshd" in logs, logs  # no keys given
        owners = subprocess.run(["docker", "exec", name, "sh", "-c",
                                 "for p in 1 $(pgrep -f '^python3 -u .*notebook.py'); do stat -c %U /proc/$p; done"],
                                capture_output=True, text=True).stdout.split()
        assert owners == ["root", "dev"]  # PID 1 is root; the notebook runs as the deployment's user
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_docker_accepts_gpus_all(gpu: Project) -> None:
    run = docker_run("--gpus", "all", IMAGE, "true", check=False)
    # The CLI accepts the flag; only the engine fails here, for lack of an NVIDIA runtime.
    assert run.returncode != 0
    assert "could not select device driver" in run.stderr, run.stderr


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in ``libcuda.so.1`` (a real shared object with that soname and cuDriverGetVersion)."""
    gcc = require("gcc")
    base = tmp_path_factory.mktemp("driver")
    (base / "cuda.c").write_text("int cuDriverGetVersion(int *v) { *v = 12090; return 0; }\n")
    folder = base / "lib"
    folder.mkdir()
    subprocess.run([gcc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                    str(folder / "libcuda.so.1"), str(base / "cuda.c")], check=True)
    versioned = base / "versioned"
    versioned.mkdir()
    shutil.copy(folder / "libcuda.so.1", versioned / "libcuda.so.550.54.15")
    return base


DRIVER_PROBE = ("import ctypes; v = ctypes.c_int(); "
                "ctypes.CDLL('libcuda.so.1').cuDriverGetVersion(ctypes.byref(v)); print(v.value)")


@pytest.mark.parametrize("mount, env, user", [
    ("/usr/local/nvidia/lib64", [], "dev"),           # the nvidia/cuda convention
    ("/opt/driver", ["-e", "CUDA_DRIVER_DIR=/opt/driver"], "dev"),  # any folder, as a user
    ("/opt/driver", ["-e", "CUDA_DRIVER_DIR=/opt/driver"], "root"),  # as root: ld.so.cache
])
def test_host_driver_folder_is_found_at_start(gpu: Project, fake_driver: Path, mount: str,
                                              env: list[str], user: str) -> None:
    volume = ["-v", f"{fake_driver / 'lib'}:{mount}:ro"]
    out = docker_run(*volume, *env, "--user", user, IMAGE, "python3", "-c", DRIVER_PROBE).stdout
    assert out.strip() == "12090"
    if user == "root":  # every process finds it, even one that drops LD_LIBRARY_PATH
        out = docker_run(*volume, *env, "--user", "root", IMAGE, "sh", "-c",
                         "env -u LD_LIBRARY_PATH python3 -c \"" + DRIVER_PROBE.replace('"', '\\"') + "\"").stdout
        assert out.strip() == "12090"


def test_driver_folder_with_only_versioned_files(gpu: Project, fake_driver: Path) -> None:
    out = docker_run("-v", f"{fake_driver / 'versioned'}:/usr/local/nvidia/lib64:ro", IMAGE,
                     "python3", "-c", DRIVER_PROBE).stdout
    assert out.strip() == "12090"


def test_without_a_driver_commands_still_run(gpu: Project) -> None:
    run = docker_run(IMAGE, "python3", "-c", DRIVER_PROBE, check=False)
    assert run.returncode == 1 and "libcuda.so.1" in run.stderr


def _layer_files(store: Store, descriptor: Descriptor) -> set[str]:
    with open_layer(store, descriptor) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        return {member.name for member in archive if not member.isdir()}


def test_layers_are_split_and_share_no_file(gpu: Project) -> None:
    layers = manifest(gpu)["layers"]
    config = json.loads((gpu.store / "blobs/sha256" / manifest(gpu)["config"]["digest"][7:]).read_text())
    names = [entry["created_by"].removeprefix("dream layer ") for entry in config["history"]]
    assert names == ["debian", "cuda-cublas", "cuda-nvrtc", "cuda", "home", "python-cupy-cuda12x",
                     "python-numpy", "python", "services", "app"]
    store = Store(gpu.store)
    seen: dict[str, str] = {}
    overrides = set()
    for name, layer in zip(names, layers):
        descriptor = Descriptor(layer["mediaType"], layer["digest"], layer["size"])
        for path in _layer_files(store, descriptor):
            if path in seen:
                overrides.add((seen[path], name, path))
            seen[path] = name
    # Only the account files are replaced on purpose (the home layer adds the user to them).
    assert overrides == {("debian", "home", f"etc/{f}") for f in ("passwd", "group", "shadow", "gshadow")}
    biggest = max(zip(names, layers), key=lambda item: item[1]["size"])
    assert biggest[0] == "cuda-cublas"


def test_adding_a_small_requirement_rebuilds_one_small_layer(gpu: Project, tmp_path: Path) -> None:
    changed = make_project(tmp_path / "changed", with_demo=False, with_gpu=True)
    changed.store = gpu.store  # same store: what was built stays built
    recipe = changed.root / "recipes/gpu-image.yaml"
    recipe.write_text(recipe.read_text().replace("[numpy, cupy-cuda12x]", "[numpy, cupy-cuda12x, rich]"))
    stale = changed.doit("build:gpu-image", check=False)
    assert stale.returncode != 0 and "doit lock:gpu-image" in stale.stdout + stale.stderr
    old_lock = json.loads((changed.root / "recipes/gpu-image.lock.json").read_text())["layers"]
    locked = changed.doit("lock:gpu-image")
    new_lock = json.loads((changed.root / "recipes/gpu-image.lock.json").read_text())["layers"]
    # only the python entry moved, and in it only what rich brought: no Debian pin, no CUDA pin
    assert [name for name in new_lock if new_lock[name] != old_lock.get(name)] == ["python"]
    old_wheels = {w["name"]: w for w in old_lock["python"]["wheels"]}
    new_wheels = {w["name"]: w for w in new_lock["python"]["wheels"]}
    assert "rich" in new_wheels and all(new_wheels[n] == w for n, w in old_wheels.items())
    assert "gpu-image.lock.json: debian: kept (" in locked.stdout
    before = manifest(gpu)["layers"]
    run = changed.doit("build:gpu-image")
    assert changed.ran_layers(run) == ["layer:gpu-image/python"]
    after = manifest(changed)["layers"]
    differing = [i for i, (a, b) in enumerate(zip(before, after)) if a["digest"] != b["digest"]]
    assert differing == [7]  # `python`, the small-wheel layer: CUDA and big Python layers keep theirs
    assert after[7]["size"] < 0.01 * sum(layer["size"] for layer in after)
