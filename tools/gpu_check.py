#!/usr/bin/env python3
"""Run an image from the dream store on this host's NVIDIA GPU, without Docker.

    python tools/gpu_check.py [--store PATH] [--keep DIR] IMAGE [-- COMMAND...]

The image (a tag in the store's ``index.json``) is unpacked into a fresh root, the host's
NVIDIA driver user-space libraries are bind-mounted *file by file* into
``<root>/usr/local/nvidia/lib64`` (never whole host library directories: the host's glibc must
not shadow the image's), ``/dev/nvidia*``, ``/proc``, ``/sys`` and a minimal ``/dev`` are mounted,
and COMMAND runs chrooted there with the image config's Env. All mounts live in a private mount
namespace (``unshare --mount``), so they vanish with it and nothing leaks to the host.

Without COMMAND a default check runs ``python3 -c`` in the image: a real CUDA computation
(a PTX saxpy kernel JIT-compiled by the driver, through ctypes and ``libcuda.so.1`` only), then,
if the image has cupy, a cuBLAS matmul compared against numpy.

Exit status: that of the command; 2 for a usage, store or layer error; 77 ("skipped") when this
host has no NVIDIA GPU or driver.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
NVIDIA_LIB_DIR = "/usr/local/nvidia/lib64"
NVIDIA_BIN_DIR = "/usr/local/nvidia/bin"
SKIPPED = 77
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINK_HOPS = 40


class CheckError(Exception):
    """A problem worth one line to the user and exit status 2 (bad store, image or layer)."""


class UnsafeLayer(CheckError):
    """A layer entry that would write outside the root: refused, never half-applied."""


def fail(message: str, status: int = 2) -> NoReturn:
    """Print one ``gpu_check:`` line to stderr and exit: callers want a line, not a traceback."""
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def say(message: str) -> None:
    """Progress on stderr, so the command's own stdout stays clean for callers that parse it."""
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


# -- the store ------------------------------------------------------------------------------

@dataclass
class Layer:
    path: Path
    media_type: str
    digest: str


@dataclass
class Image:
    """What running an image needs: its config (Env, WorkingDir) and its layers, bottom first."""

    name: str
    config: dict[str, Any]
    layers: list[Layer] = field(default_factory=list)


def _blob(store: Path, digest: str) -> Path:
    """The file of blob ``digest``; a digest is checked so it can never name a path elsewhere."""
    algorithm, _, hexpart = digest.partition(":")
    if not algorithm.isalnum() or not hexpart.isalnum():
        raise CheckError(f"malformed digest {digest!r} in store {store}")
    path = store / "blobs" / algorithm / hexpart
    if not path.is_file():
        raise CheckError(f"blob {digest} is missing from store {store}")
    return path


def _read_json(store: Path, digest: str) -> dict[str, Any]:
    return json.loads(_blob(store, digest).read_bytes())


def _host_platform() -> tuple[str, str]:
    """The OCI (os, architecture) of this host, to pick from a multi-platform index."""
    machine = platform.machine().lower()
    return "linux", {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def load_image(store: Path, name: str) -> Image:
    """Find tag ``name`` in ``store``'s index.json and read its manifest, config and layer list."""
    index_path = store / "index.json"
    if not index_path.is_file():
        raise CheckError(f"no OCI image layout at {store} (no index.json); set --store or DREAM_STORE")
    index = json.loads(index_path.read_bytes())
    entries = index.get("manifests", [])
    found = [m for m in entries if m.get("annotations", {}).get(REF_NAME) == name]
    if not found:
        tags = sorted(m.get("annotations", {}).get(REF_NAME, "?") for m in entries)
        raise CheckError(f"image {name!r} is not in store {store} (tags: {', '.join(tags) or 'none'})")
    descriptor = found[0]
    manifest = _read_json(store, descriptor["digest"])
    if descriptor.get("mediaType") in INDEX_TYPES or manifest.get("mediaType") in INDEX_TYPES:
        manifest = _read_json(store, _pick_platform(manifest, name)["digest"])
    config = _read_json(store, manifest["config"]["digest"])
    layers = [Layer(_blob(store, layer["digest"]), layer["mediaType"], layer["digest"])
              for layer in manifest.get("layers", [])]
    return Image(name, config, layers)


def _pick_platform(index: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of a multi-platform index that this host can run."""
    want_os, want_arch = _host_platform()
    for entry in index.get("manifests", []):
        plat = entry.get("platform", {})
        if plat.get("os") == want_os and plat.get("architecture") == want_arch:
            return entry
    raise CheckError(f"image {name!r} has no {want_os}/{want_arch} manifest")


# -- unpacking ------------------------------------------------------------------------------

def _open_layer(layer: Layer) -> IO[bytes]:
    """A decompressed stream of the layer's tar, chosen by media type (gzip, zstd or plain)."""
    if layer.media_type.endswith("gzip"):
        from isal import igzip
        return igzip.open(layer.path, "rb")
    if layer.media_type.endswith("zstd"):
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(open(layer.path, "rb"), read_across_frames=True,
                                                          closefd=True)
    if layer.media_type.endswith("tar"):
        return open(layer.path, "rb")
    raise CheckError(f"layer {layer.digest} has unsupported media type {layer.media_type}")


def _entry_parts(name: str, what: str) -> list[str]:
    """The path components of a tar name; absolute names and ``..`` are refused, not cleaned up."""
    if name.startswith("/"):
        raise UnsafeLayer(f"{what} {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"{what} {name!r} has a '..' component")
    return parts


def resolve_dir(root: Path, parts: list[str], create: bool = False) -> Path:
    """The host path of directory ``parts`` inside ``root``, following the image's own symlinks.

    Symlinks are followed as the chrooted image would see them (an absolute target restarts at
    ``root``), because images legitimately write through ``lib -> usr/lib``. A target that
    climbs above the root is refused: only a hostile layer does that. With ``create``, missing
    directories are made (mode 0755), so the result holds no symlink the host could follow.
    """
    resolved: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise UnsafeLayer(f"path {'/'.join(parts)!r} leads out of the root through a symlink")
            resolved.pop()
            continue
        here = root.joinpath(*resolved, part)
        if here.is_symlink():
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise UnsafeLayer(f"path {'/'.join(parts)!r} has too many levels of symlinks")
            target = os.readlink(here)
            if target.startswith("/"):
                resolved = []
            todo = target.split("/") + todo
            continue
        if create and not os.path.lexists(here):
            os.mkdir(here, 0o755)
        resolved.append(part)
    return root.joinpath(*resolved)


def resolve_in_root(root: Path, parts: list[str], create: bool = False) -> Path:
    """The host path of entry ``parts``: its directory resolved, its own name never followed,
    so the caller can replace whatever is there without touching what a symlink points at."""
    return resolve_dir(root, parts[:-1], create) / parts[-1]


def _remove(path: Path) -> None:
    """Delete whatever is at ``path`` (never following a symlink out of the tree)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _mark_written(path: Path, root: Path, touched: set[Path]) -> None:
    """Remember that this layer wrote ``path`` (and so reached each of its parents)."""
    while path != root and path not in touched:
        touched.add(path)
        path = path.parent


def _apply_whiteout(root: Path, parts: list[str], touched: set[Path]) -> None:
    """``.wh.NAME`` deletes NAME from lower layers; ``.wh..wh..opq`` empties its directory.

    Both act on lower layers only: what this same layer wrote (``touched``) stays, whatever
    the order of the entries in the tar.
    """
    parent = resolve_dir(root, parts[:-1])
    if not parent.is_dir():
        return
    if parts[-1] == OPAQUE:
        for child in list(parent.iterdir()):
            if child not in touched:
                _remove(child)
        return
    victim = parent / parts[-1][len(WHITEOUT):]
    if victim not in touched:
        _remove(victim)


def _set_owner_and_mode(path: Path, member: tarfile.TarInfo, as_root: bool) -> None:
    """Ownership first (chown clears setuid), then the full mode, then mtime."""
    is_link = member.issym()
    if as_root:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(path, stat.S_IMODE(member.mode))
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def _extract_member(root: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path,
                    as_root: bool) -> None:
    """Write one entry (file, dir, symlink, hardlink, device, fifo) at ``path`` in the root."""
    if member.isdir():
        if not (path.is_dir() and not path.is_symlink()):
            _remove(path)
            os.mkdir(path, 0o700)
        return  # owner and mode come once the layer is done, so its contents can be written
    _remove(path)
    if member.isreg():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        source = tar.extractfile(member)
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                shutil.copyfileobj(source, out, 1 << 20)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        target = resolve_in_root(root, _entry_parts(member.linkname, "hardlink target"))
        if not os.path.lexists(target):
            raise CheckError(f"hardlink {member.name!r} points at missing {member.linkname!r}")
        os.link(target, path, follow_symlinks=False)
        return  # a hardlink shares its target's inode: owner and mode are the target's
    elif member.ischr() or member.isblk() or member.isfifo():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        if not as_root and kind != stat.S_IFIFO:
            return  # device nodes need root; /dev is mounted afresh anyway
        os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    else:
        return
    _set_owner_and_mode(path, member, as_root)


def unpack_layer(layer: Layer, root: Path) -> None:
    """Apply one layer on top of ``root``: whiteouts, then entries, directory modes last."""
    as_root = os.geteuid() == 0
    touched: set[Path] = set()
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    try:
        with _open_layer(layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = _entry_parts(member.name, "entry")
                if not parts:
                    continue  # "./": the root itself keeps its mode
                if parts[-1].startswith(WHITEOUT):
                    _apply_whiteout(root, parts, touched)
                    continue
                path = resolve_in_root(root, parts, create=True)
                if not path.parent.is_dir():
                    raise UnsafeLayer(f"entry {member.name!r}: its parent is not a directory")
                _extract_member(root, tar, member, path, as_root)
                _mark_written(path, root, touched)
                if member.isdir():
                    dirs.append((path, member))
    except UnsafeLayer as error:
        raise UnsafeLayer(f"refusing layer {layer.digest}: {error}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise CheckError(f"cannot unpack layer {layer.digest}: {error}") from None
    for path, member in reversed(dirs):
        _set_owner_and_mode(path, member, as_root)


def unpack(image: Image, root: Path) -> None:
    """Unpack every layer of ``image``, bottom first, into the (empty) directory ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for layer in image.layers:
        unpack_layer(layer, root)


# -- the host's driver ----------------------------------------------------------------------

def ldconfig_libraries() -> dict[str, str]:
    """``ldconfig -p`` as {soname: path}, a 64-bit entry winning over a 32-bit one."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        text = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    found: dict[str, tuple[bool, str]] = {}
    for line in text.splitlines():
        left, arrow, path = line.partition(" => ")
        if not arrow:
            continue
        name, _, flags = left.strip().partition(" ")
        is_64 = "64" in flags  # "(libc6,x86-64)", "(libc6,AArch64)"; 32-bit is "(libc6)"
        if name not in found or (is_64 and not found[name][0]):
            found[name] = (is_64, path.strip())
    return {name: path for name, (_, path) in found.items()}


def find_driver_libraries() -> dict[str, Path] | None:
    """The driver's user-space files to bind, by file name; None when this host has no driver.

    The named sonames come from ``ldconfig -p``; every other ``libnvidia-*``/``libcuda*`` file
    next to libcuda.so.1 comes along, because libcuda loads some of them (ptxjitcompiler, nvvm,
    gpucomp...) by name at run time and their set changes between driver versions.
    """
    libraries = ldconfig_libraries()
    if "libcuda.so.1" not in libraries:
        return None
    chosen: dict[str, Path] = {}
    for name, path in libraries.items():
        if name in ("libcuda.so.1", "libnvidia-ptxjitcompiler.so.1", "libnvidia-ml.so.1") \
                or name.startswith("libnvidia-nvvm.so"):
            chosen[name] = Path(path)
    libdir = Path(libraries["libcuda.so.1"]).parent
    for pattern in ("libnvidia-*.so*", "libcuda.so*"):
        for path in sorted(libdir.glob(pattern)):
            if path.name not in chosen and path.exists() and not path.is_dir():
                chosen[path.name] = path
    return chosen


def nvidia_devices() -> list[Path]:
    """The host's ``/dev/nvidia*`` nodes (nvidiactl, nvidia0.., nvidia-uvm, nvidia-caps/...)."""
    return [Path(p) for p in sorted(glob.glob("/dev/nvidia*"))]


def gpu_missing_reason() -> str | None:
    """Why this host cannot run the check, or None when it has a GPU and a driver."""
    if not Path("/dev/nvidiactl").exists():
        return "no NVIDIA GPU on this host (/dev/nvidiactl is missing)"
    if find_driver_libraries() is None:
        return "no NVIDIA driver on this host (libcuda.so.1 is not in `ldconfig -p`)"
    return None


# -- inside the private mount namespace -----------------------------------------------------

def _mount(*args: str) -> None:
    """Run mount(8); a failure is fatal, since a half-set-up root would mislead the check."""
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")


def _mount_point(root: Path, inside: str, is_dir: bool) -> Path:
    """Make an empty file or directory to mount over, refusing image symlinks on the way.

    Mounting follows symlinks on the host, so a link planted in the image (``/usr -> /``)
    must never be a mount target's ancestor or the target itself.
    """
    here = root
    parts = [p for p in inside.split("/") if p]
    for index, part in enumerate(parts):
        here = here / part
        if here.is_symlink():
            raise CheckError(f"cannot mount at {inside}: {here.relative_to(root)} is a symlink in the image")
        last = index == len(parts) - 1
        if not os.path.lexists(here):
            if last and not is_dir:
                here.touch(0o644)
            else:
                here.mkdir(0o755)
    return here


def _bind(source: Path, root: Path, inside: str, read_only: bool = False) -> None:
    """Bind one host file or directory to ``inside`` the root (recursively for directories)."""
    target = _mount_point(root, inside, source.is_dir())
    _mount("--rbind" if source.is_dir() else "--bind", str(source), str(target))
    if read_only:
        _mount("-o", "remount,bind,ro", str(target))


def setup_root(root: Path, libraries: dict[str, Path], devices: list[Path]) -> None:
    """Mount /proc, /sys, a small /dev and the driver into the root (private namespace only)."""
    _mount("--make-rprivate", "/")
    proc = _mount_point(root, "/proc", True)
    if subprocess.run(["mount", "-t", "proc", "proc", str(proc)], capture_output=True, check=False).returncode:
        _mount("--rbind", "/proc", str(proc))  # fresh procfs refused (in a container): reuse the host's
    _mount("--rbind", "/sys", str(_mount_point(root, "/sys", True)))
    dev = _mount_point(root, "/dev", True)
    _mount("-t", "tmpfs", "-o", "nosuid,mode=0755,size=64k", "tmpfs", str(dev))
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        if Path("/dev", name).exists():
            _bind(Path("/dev", name), root, f"/dev/{name}")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev / name)
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "shm", str(_mount_point(root, "/dev/shm", True)))
    for device in devices:
        _bind(device, root, f"/dev/{device.name}")
    for name, path in sorted(libraries.items()):
        _bind(path.resolve(), root, f"{NVIDIA_LIB_DIR}/{name}", read_only=True)
    smi = shutil.which("nvidia-smi")
    if smi:
        _bind(Path(smi).resolve(), root, f"{NVIDIA_BIN_DIR}/nvidia-smi", read_only=True)


def image_environment(config: dict[str, Any]) -> dict[str, str]:
    """The image config's Env, with the bound driver directory on LD_LIBRARY_PATH.

    The driver directory goes first unless the image already lists it: libcuda must match the
    host's kernel module, and that directory holds nothing but driver files, so it cannot
    shadow the image's own libraries.
    """
    env: dict[str, str] = {}
    for item in config.get("config", {}).get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root")
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    if NVIDIA_LIB_DIR not in paths:
        paths.insert(0, NVIDIA_LIB_DIR)
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    env["PATH"] = env["PATH"] + ":" + NVIDIA_BIN_DIR
    return env


def run_inside(plan_file: Path) -> NoReturn:
    """The re-executed half: already in a private mount namespace, set up, chroot and exec."""
    plan = json.loads(plan_file.read_text())
    root = Path(plan["root"])
    try:
        setup_root(root, {k: Path(v) for k, v in plan["libraries"].items()},
                   [Path(d) for d in plan["devices"]])
    except (CheckError, OSError) as error:
        fail(str(error))
    env, command = plan["env"], plan["command"]
    os.chroot(root)
    try:
        os.chdir(plan["workdir"] or "/")
    except OSError:
        os.chdir("/")
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as error:
        fail(f"cannot run {command[0]!r} in the image: {error.strerror}", 127)


# -- the default check ----------------------------------------------------------------------

SAXPY_PTX = r"""
.version 7.0
.target sm_52
.address_size 64

.visible .entry saxpy(
    .param .u32 n,
    .param .f32 a,
    .param .u64 x,
    .param .u64 y
)
{
    .reg .pred  %p<2>;
    .reg .b32   %r<6>;
    .reg .f32   %f<4>;
    .reg .b64   %rd<8>;

    ld.param.u32        %r1, [n];
    ld.param.f32        %f1, [a];
    ld.param.u64        %rd1, [x];
    ld.param.u64        %rd2, [y];
    mov.u32             %r2, %ctaid.x;
    mov.u32             %r3, %ntid.x;
    mov.u32             %r4, %tid.x;
    mad.lo.s32          %r5, %r2, %r3, %r4;
    setp.ge.u32         %p1, %r5, %r1;
    @%p1 bra            DONE;
    cvta.to.global.u64  %rd3, %rd1;
    cvta.to.global.u64  %rd4, %rd2;
    mul.wide.u32        %rd5, %r5, 4;
    add.s64             %rd6, %rd3, %rd5;
    add.s64             %rd7, %rd4, %rd5;
    ld.global.f32       %f2, [%rd6];
    ld.global.f32       %f3, [%rd7];
    fma.rn.f32          %f3, %f1, %f2, %f3;
    st.global.f32       [%rd7], %f3;
DONE:
    ret;
}
"""

# Runs inside the image with its python3: nothing but the standard library and libcuda.so.1,
# so it proves the driver works before anything from the image's CUDA toolkit is involved.
CHECK_PROGRAM = r'''
import array, ctypes, importlib.util, sys

PTX = @PTX@
cuda = ctypes.CDLL("libcuda.so.1")
u64, vp = ctypes.c_uint64, ctypes.c_void_p

def call(name, *args):
    result = getattr(cuda, name)(*args)
    if result != 0:
        text = ctypes.c_char_p()
        cuda.cuGetErrorString(result, ctypes.byref(text))
        sys.exit(f"{name} failed: CUDA error {result} ({(text.value or b'?').decode()})")

cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), ctypes.c_size_t]
cuda.cuMemcpyHtoD_v2.argtypes = [u64, vp, ctypes.c_size_t]
cuda.cuMemcpyDtoH_v2.argtypes = [vp, u64, ctypes.c_size_t]
cuda.cuMemFree_v2.argtypes = [u64]
cuda.cuLaunchKernel.argtypes = [vp] + [ctypes.c_uint] * 7 + [vp, ctypes.POINTER(vp), ctypes.POINTER(vp)]

def saxpy(n=1 << 20, a=2.0):
    call("cuInit", 0)
    device = ctypes.c_int()
    call("cuDeviceGet", ctypes.byref(device), 0)
    name = ctypes.create_string_buffer(256)
    call("cuDeviceGetName", name, 256, device)
    context, module, kernel = vp(), vp(), vp()
    call("cuCtxCreate_v2", ctypes.byref(context), 0, device)
    call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(PTX.encode()))
    call("cuModuleGetFunction", ctypes.byref(kernel), module, b"saxpy")
    # small integers keep every value exact in float32, so the check can demand equality
    x = array.array("f", (float(i % 1000) for i in range(n)))
    y = array.array("f", (float(i % 7) for i in range(n)))
    size = n * x.itemsize
    dx, dy = u64(), u64()
    call("cuMemAlloc_v2", ctypes.byref(dx), size)
    call("cuMemAlloc_v2", ctypes.byref(dy), size)
    call("cuMemcpyHtoD_v2", dx, x.buffer_info()[0], size)
    call("cuMemcpyHtoD_v2", dy, y.buffer_info()[0], size)
    args = [ctypes.c_uint32(n), ctypes.c_float(a), dx, dy]
    params = (vp * 4)(*[ctypes.addressof(arg) for arg in args])
    block = 256
    call("cuLaunchKernel", kernel, (n + block - 1) // block, 1, 1, block, 1, 1, 0, None, params, None)
    call("cuCtxSynchronize")
    out = array.array("f", bytes(size))
    call("cuMemcpyDtoH_v2", out.buffer_info()[0], dy, size)
    bad = [i for i in range(n) if out[i] != a * x[i] + y[i]]
    call("cuMemFree_v2", dx)
    call("cuMemFree_v2", dy)
    call("cuModuleUnload", module)
    call("cuCtxDestroy_v2", context)
    print(f"device: {name.value.decode()}")
    if bad:
        i = bad[0]
        sys.exit(f"saxpy MISMATCH at {len(bad)} of {n} elements, e.g. [{i}]: {out[i]} != {a * x[i] + y[i]}")
    print(f"saxpy ok on {n} elements")

def cupy_matmul(size=1024):
    if importlib.util.find_spec("cupy") is None:
        print("cupy: not in the image, matmul skipped")
        return
    import cupy, numpy
    rng = numpy.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=numpy.float32)
    b = rng.standard_normal((size, size), dtype=numpy.float32)
    got = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b)).astype(numpy.float64)
    want = a.astype(numpy.float64) @ b.astype(numpy.float64)
    error = float(numpy.abs(got - want).max())
    scale = float(numpy.abs(want).max())
    print(f"cupy {cupy.__version__} matmul {size}x{size}: max error {error:.3g} (max |value| {scale:.3g})")
    if not error <= 1e-3 * scale:
        sys.exit("cupy matmul MISMATCH against numpy")
    print("cupy matmul ok")

saxpy()
cupy_matmul()
'''.replace("@PTX@", repr(SAXPY_PTX))

DEFAULT_COMMAND = ["python3", "-c", CHECK_PROGRAM]


# -- the outer half -------------------------------------------------------------------------

def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this (the host's) namespace: must be none to delete."""
    real = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == real or point.startswith(real.rstrip("/") + "/"):
                found.append(point)
    return found


def _fresh_root(keep: str | None) -> tuple[Path, Path]:
    """(root, scratch dir): ``--keep DIR`` must be empty or new, else a temp dir is the root."""
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if keep is None:
        return scratch / "root", scratch
    root = Path(keep).absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        shutil.rmtree(scratch)
        raise CheckError(f"--keep {keep}: must be a new or empty directory")
    return root, scratch


def _cleanup(scratch: Path) -> None:
    """Delete the scratch dir, but never through a mount (that would delete host files)."""
    mounts = _mounts_under(scratch)
    if mounts:
        say(f"leaving {scratch} in place: still mounted at {mounts[0]}")
        return
    shutil.rmtree(scratch, ignore_errors=True)


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our options before ``--``, the image's command after it."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, command = _split_command(argv)
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", usage="%(prog)s [--store PATH] [--keep DIR] IMAGE [-- COMMAND...]",
        description="Run an image of the dream store on this host's NVIDIA GPU (needs root).")
    parser.add_argument("--store", default=os.environ.get("DREAM_STORE", ".dream/store"),
                        help="OCI layout to read (default: $DREAM_STORE or .dream/store)")
    parser.add_argument("--keep", metavar="DIR", help="unpack into DIR (new or empty) and keep it")
    parser.add_argument("image", help="tag name in the store's index.json")
    return parser.parse_args(ours), command


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--inside":
        run_inside(Path(argv[1]))
    args, command = parse_args(argv)
    if os.geteuid() != 0:
        fail("must run as root (it unpacks with ownership, mounts and chroots)")
    try:
        image = load_image(Path(args.store), args.image)
    except CheckError as error:
        fail(str(error))
    reason = gpu_missing_reason()
    if reason:
        print(f"gpu_check: skipped: {reason}", flush=True)
        return SKIPPED
    if not shutil.which("unshare"):
        fail("the unshare command (util-linux) is needed for a private mount namespace")
    try:
        root, scratch = _fresh_root(args.keep)
    except CheckError as error:
        fail(str(error))
    try:
        try:
            say(f"unpacking {args.image} ({len(image.layers)} layers) into {root}")
            unpack(image, root)
        except CheckError as error:
            fail(str(error))
        plan = {"root": str(root), "workdir": image.config.get("config", {}).get("WorkingDir") or "/",
                "env": image_environment(image.config), "command": command or DEFAULT_COMMAND,
                "libraries": {k: str(v) for k, v in (find_driver_libraries() or {}).items()},
                "devices": [str(d) for d in nvidia_devices()]}
        plan_file = scratch / "plan.json"
        plan_file.write_text(json.dumps(plan))
        say(f"running {'the default CUDA check' if not command else ' '.join(command)} "
            f"with {len(plan['libraries'])} driver files")
        run = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "--",
                              sys.executable, os.path.abspath(__file__), "--inside", str(plan_file)],
                             check=False)
        return run.returncode
    finally:
        _cleanup(scratch)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
