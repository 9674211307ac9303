"""tools/gpu_smoke.sh (issue 19): the small gpu-smoke image and its one-command GPU check.

The recipe is built from its lock into an empty store (its golden digest, a store under 60 MiB),
and the script runs on that store as a GPU host would run it (only the store and the script, no
host Python on PATH) against a stand-in ``libcuda.so.1`` where no GPU exists: the image's real
NVRTC compiles the kernel, the stand-in checks that it got NVRTC's cubin (or PTX) and computes
saxpy on the CPU; planted wrong, the script must fail. On a GPU host the last test runs it
against the real driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Project, make_project, require
from tests.integration.test_gpu_check import GZIP, directory, entry, make_store, symlink
from tests.integration.test_golden import golden

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "gpu_smoke.sh"
MIB = 1 << 20
N = 1 << 20
# what the script may use on the host: bash, coreutils, util-linux, GNU tar, gzip, grep, sed
HOST_TOOLS = ["bash", "env", "id", "realpath", "sha256sum", "mktemp", "grep", "sed", "head", "tail",
              "dirname", "readlink", "ln", "rm", "mkdir", "ls", "unshare", "mount", "chroot", "tar",
              "gzip", "ldconfig", "uname"]

STANDIN_C = r'''
/* A stand-in libcuda.so.1 for hosts without a GPU: the driver API calls gpu_smoke.sh's check
 * makes, with "device" memory in host memory and saxpy computed on the CPU. It refuses a
 * module that is not what NVRTC makes (a CUDA ELF cubin, or PTX with a saxpy entry), and with
 * -DPLANT_WRONG it gets one element wrong. -DSM=120 reports a GPU newer than the image's NVRTC. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef SM
#define SM 90
#endif

typedef uint64_t CUdeviceptr;
static int initialized, module_ok, contexts;
static const char *message[] = {"no error", "invalid value", "out of memory", "not initialized"};

int cuGetErrorString(int error, const char **text) { *text = error >= 0 && error < 4 ? message[error] : "unknown"; return 0; }
int cuInit(unsigned flags) { (void)flags; initialized = 1; return 0; }
int cuDriverGetVersion(int *version) { *version = 12080; return 0; }
int cuDeviceGetCount(int *count) { if (!initialized) return 3; *count = 1; return 0; }
int cuDeviceGet(int *device, int ordinal) { if (!initialized) return 3; if (ordinal) return 1; *device = 0; return 0; }
int cuDeviceGetName(char *name, int length, int device) {
    (void)device; strncpy(name, "dream stand-in GPU", (size_t)length); name[length - 1] = 0; return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    (void)device;
    if (attribute == 75) { *value = SM / 10; return 0; }
    if (attribute == 76) { *value = SM % 10; return 0; }
    return 1;
}
int cuCtxCreate_v2(void **context, unsigned flags, int device) {
    (void)flags; (void)device; if (!initialized) return 3; *context = &contexts; contexts++; return 0;
}
int cuCtxDestroy_v2(void *context) { (void)context; contexts--; return 0; }
int cuCtxSynchronize(void) { return contexts > 0 ? 0 : 1; }

int cuModuleLoadData(void **module, const unsigned char *image) {
    /* a cubin: ELF for machine 190 (EM_CUDA), with the kernel's name among its strings */
    if (memcmp(image, "\177ELF", 4) == 0 && (image[18] | image[19] << 8) == 190) {
        uint64_t size = *(const uint64_t *)(image + 40) + 64 * (uint64_t)(image[60] | image[61] << 8);
        module_ok = size > 64 && size < (1 << 24) && memmem(image, size, "saxpy", 5) != NULL;
    } else {
        module_ok = strstr((const char *)image, ".entry saxpy") != NULL;
    }
    *module = &module_ok;
    return module_ok ? 0 : 1;
}
int cuModuleUnload(void *module) { (void)module; return 0; }
int cuModuleGetFunction(void **function, void *module, const char *name) {
    (void)module; if (!module_ok || strcmp(name, "saxpy") != 0) return 1; *function = &module_ok; return 0;
}

int cuMemAlloc_v2(CUdeviceptr *pointer, size_t size) {
    void *memory = malloc(size); if (!memory) return 2; *pointer = (CUdeviceptr)(uintptr_t)memory; return 0;
}
int cuMemFree_v2(CUdeviceptr pointer) { free((void *)(uintptr_t)pointer); return 0; }
int cuMemcpyHtoD_v2(CUdeviceptr to, const void *from, size_t size) { memcpy((void *)(uintptr_t)to, from, size); return 0; }
int cuMemcpyDtoH_v2(void *to, CUdeviceptr from, size_t size) { memcpy(to, (const void *)(uintptr_t)from, size); return 0; }

int cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
    (void)shared; (void)stream; (void)extra;
    if (function != &module_ok || gy != 1 || gz != 1 || by != 1 || bz != 1 || !params) return 1;
    unsigned n = *(unsigned *)params[0];
    float a = *(float *)params[1];
    const float *x = (const float *)(uintptr_t) * (CUdeviceptr *)params[2];
    float *y = (float *)(uintptr_t) * (CUdeviceptr *)params[3];
    for (uint64_t i = 0; i < (uint64_t)gx * bx && i < n; i++)
        y[i] = a * x[i] + y[i];
#ifdef PLANT_WRONG
    y[n / 3] += 1.0f;
#endif
    return 0;
}
'''


def root_or_skip() -> None:
    if os.geteuid() != 0:
        message = "tools/gpu_smoke.sh needs root (it mounts and chroots)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run it)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """gpu-smoke as committed, built from its lock into an empty store, no layer cache."""
    require("apt-get")
    base = tmp_path_factory.mktemp("smoke") / "project"
    project = make_project(base, with_demo=False, recipes={
        name: (REPO / "recipes" / name).read_text() for name in ("gpu-smoke.yaml", "gpu-smoke.lock.json")})
    assert not project.store.exists()
    project.doit("build:gpu-smoke", env={"DREAM_LAYER_CACHE": "off"})
    return project


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-in driver folders: ``ok`` (an sm_90 GPU), ``wrong`` (one element planted wrong),
    ``newer`` (sm_120, newer than the image's NVRTC knows: PTX for the driver to JIT)."""
    gcc = require("gcc")
    base = tmp_path_factory.mktemp("standin")
    (base / "cuda.c").write_text(STANDIN_C)
    folders = {}
    for name, flags in (("ok", []), ("wrong", ["-DPLANT_WRONG"]), ("newer", ["-DSM=120"])):
        folder = base / name
        folder.mkdir(mode=0o755)
        subprocess.run([gcc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", *flags,
                        "-o", str(folder / "libcuda.so.1"), str(base / "cuda.c")], check=True)
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the script alone, and an environment whose PATH has only the host tools the
    script may use: no Python, nothing of dream."""
    base = tmp_path_factory.mktemp("host")
    script = base / "gpu_smoke.sh"
    shutil.copy(SCRIPT, script)
    tools = base / "bin"
    tools.mkdir()
    for tool in HOST_TOOLS:
        found = require(tool) if tool != "ldconfig" else shutil.which("ldconfig") or "/sbin/ldconfig"
        os.symlink(found, tools / tool)
    return script, {"PATH": str(tools), "LANG": "C"}


def smoke_check(host: tuple[Path, dict[str, str]], *args: str | Path,
                tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    root_or_skip()
    script, env = host
    return subprocess.run([env["PATH"] + "/bash", str(script), *map(str, args)], cwd=script.parent,
                          env={**env, **({"TMPDIR": str(tmpdir)} if tmpdir else {})},
                          capture_output=True, text=True, timeout=600, check=False)


def test_the_image_is_the_golden_one_and_its_store_is_under_60_mib(smoke: Project) -> None:
    assert smoke.manifest_digest("gpu-smoke") == golden("gpu-smoke")
    size = sum(path.stat().st_size for path in smoke.store.rglob("*") if path.is_file())
    used = int(subprocess.run(["du", "-sb", str(smoke.store)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    assert size < 60 * MIB and used < 60 * MIB, (size, used)


def test_the_host_has_no_python(host: tuple[Path, dict[str, str]]) -> None:
    assert shutil.which("python3", path=host[1]["PATH"]) is None
    assert shutil.which("python", path=host[1]["PATH"]) is None


def test_passes_on_the_right_numbers(smoke: Project, drivers: dict[str, Path],
                                     host: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = smoke_check(host, "--driver", drivers["ok"], smoke.store, tmpdir=scratch)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        f"gpu_smoke: ok: saxpy on {N} elements exact; dream stand-in GPU (sm_90), driver CUDA 12.8, "
        "NVRTC 12.6 cubin, runtime 12.6"], run.stdout
    assert run.stderr == ""
    assert list(scratch.iterdir()) == []  # the unpacked root is gone again


def test_fails_on_a_planted_wrong_number(smoke: Project, drivers: dict[str, Path],
                                         host: tuple[Path, dict[str, str]]) -> None:
    run = smoke_check(host, "--driver", drivers["wrong"], smoke.store, "gpu-smoke")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpu_smoke: FAILED: saxpy WRONG at 1 of {N} elements, "
                                                   f"first [{N // 3}]: "), run.stdout


def test_a_gpu_newer_than_the_images_nvrtc_gets_ptx(smoke: Project, drivers: dict[str, Path],
                                                    host: tuple[Path, dict[str, str]]) -> None:
    run = smoke_check(host, "--driver", drivers["newer"], smoke.store)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        f"gpu_smoke: ok: saxpy on {N} elements exact; dream stand-in GPU (sm_120), driver CUDA 12.8, "
        "NVRTC 12.6 PTX compute_90, runtime 12.6"], run.stdout


def test_a_damaged_blob_or_a_missing_image_is_one_line(smoke: Project, drivers: dict[str, Path],
                                                       host: tuple[Path, dict[str, str]],
                                                       tmp_path: Path) -> None:
    missing = smoke_check(host, "--driver", drivers["ok"], smoke.store, "nope")
    assert (missing.returncode, missing.stdout) == (
        2, f"gpu_smoke: 'nope' is not in store {smoke.store.resolve()} (tags: gpu-smoke)\n")
    store = tmp_path / "store"
    shutil.copytree(smoke.store, store)
    biggest = max((store / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    run = smoke_check(host, "--driver", drivers["ok"], store)
    assert run.returncode == 2 and run.stdout.startswith(f"gpu_smoke: blob sha256:{biggest.name} is damaged"), run.stdout


def test_without_a_gpu_it_says_skipped(smoke: Project, host: tuple[Path, dict[str, str]]) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this host has a GPU (test_the_real_gpu runs)")
    run = smoke_check(host, smoke.store)
    assert (run.returncode, run.stdout) == (77, "gpu_smoke: skipped: no NVIDIA GPU on this host "
                                                "(/dev/nvidiactl is missing)\n")


# -- unpacking without Python: whiteouts, and layers that try to leave the root -------------

def test_layers_are_applied_with_their_whiteouts(drivers: dict[str, Path], host: tuple[Path, dict[str, str]],
                                                 tmp_path: Path) -> None:
    lower = [directory("etc/"), entry("etc/gone", b"x"), entry("etc/kept", b"kept\n"), directory("opq/"),
             entry("opq/old", b"old"), directory("usr/"), directory("usr/lib/"), symlink("lib", "usr/lib"),
             entry("bin-su", b"#!/bin/sh\n", mode=0o4755)]
    upper = [entry("etc/.wh.gone", b""), directory("opq/"), entry("opq/.wh..wh..opq", b""),
             entry("opq/new", b"new"), entry("lib/libz.so.1", b"z"), entry("etc/hard", kind=tarfile.LNKTYPE,
                                                                           link="etc/kept")]
    store = make_store(tmp_path / "store", "tiny", [(GZIP, lower), (GZIP, upper)])
    keep = tmp_path / "root"
    run = smoke_check(host, "--driver", drivers["ok"], "--keep", keep, store, "tiny")
    # no python3 in this image: the check cannot run, but the root is there to look at
    assert run.returncode != 0 and run.stdout.startswith("gpu_smoke: FAILED: "), run.stdout
    assert not (keep / "etc/gone").exists() and not (keep / "etc/.wh.gone").exists()
    assert (keep / "etc/kept").read_text() == "kept\n"
    assert sorted(p.name for p in (keep / "opq").iterdir()) == ["new"]
    assert (keep / "usr/lib/libz.so.1").read_text() == "z"
    assert (keep / "etc/hard").stat().st_ino == (keep / "etc/kept").stat().st_ino
    assert (keep / "bin-su").stat().st_mode & 0o7777 == 0o4755
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(keep) in line]


@pytest.mark.parametrize("layers", [
    [[entry("../evil", b"evil")]],
    [[directory("a/"), entry("a/../../evil", b"evil")]],
    [[symlink("link", "../../..")], [entry("link/evil", b"evil")]],
    [[symlink("link", "/../../..")], [entry("link/evil", b"evil")]],
    [[symlink("link", "../../..")], [entry("link/.wh.evil", b"")]],
    [[symlink("link", "../../.."), entry("link/evil", b"evil")]],
], ids=["dotdot", "dotdot-inside", "symlink-below", "absolute-symlink-below", "whiteout-through-symlink",
        "symlink-same-layer"])
def test_layers_that_leave_the_root_are_refused(drivers: dict[str, Path], host: tuple[Path, dict[str, str]],
                                                tmp_path: Path, layers: list[list[tuple[tarfile.TarInfo, bytes | None]]]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil").write_text("untouched")
    store = make_store(tmp_path / "store", "bad", [(GZIP, entries) for entries in layers])
    run = smoke_check(host, "--driver", drivers["ok"], "--keep", outside / "deeper" / "root", store, "bad")
    assert run.returncode == 2, run.stdout + run.stderr
    assert len(run.stdout.splitlines()) == 1
    assert run.stdout.startswith(("gpu_smoke: refusing layer sha256:", "gpu_smoke: cannot unpack layer sha256:"))
    assert (outside / "evil").read_text() == "untouched"
    assert sorted(p.name for p in outside.iterdir()) == ["deeper", "evil"]


# -- the real thing -------------------------------------------------------------------------

@pytest.mark.gpu
def test_the_real_gpu(smoke: Project, host: tuple[Path, dict[str, str]]) -> None:
    """On a GPU host: the host's own driver, found by `ldconfig -p`, runs NVRTC's kernel."""
    if not Path("/dev/nvidiactl").exists():
        pytest.skip("no NVIDIA GPU on this host (/dev/nvidiactl is missing)")
    run = smoke_check(host, smoke.store)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"gpu_smoke: ok: saxpy on {N} elements exact; ")
