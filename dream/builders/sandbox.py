"""The sandbox a `run` layer's command executes in: unshare(1) + overlayfs, as root.

Why this and not bubblewrap: Debian 12's bubblewrap (0.8) cannot mount an overlay (0.9 added
``--overlay``), and copying the layers below into a directory per step is what this design
must avoid (a PyTorch image's are 7 GB). util-linux's ``unshare`` gives the namespaces, the
kernel's overlayfs the file system, and ``sandbox_entry.py`` the few mounts in between; running
as real root keeps every owner as the image says and lets the step switch to its user for real,
as a Dockerfile's ``RUN`` does.

- **Lower layers**: each image layer below is unpacked once, by itself, into
  ``<store>/dream/rootfs/<diff_id>`` (`unpacked`; `doit gc` empties it; `dream.oci.unpack` turns whiteouts into
  overlayfs's) and shared by every step and build after; overlayfs stacks them read-only, with
  the step's inputs as the topmost.
- **Writes** land in the scratch's ``upper`` directory: what of it lies under the declared
  outputs becomes the layer (`collect`), the rest is dropped and named.
- **Isolation**: new mount, PID, network (no interface up: not even loopback reaches out),
  IPC and UTS namespaces; a fixed environment; a time limit, after which the whole namespace is
  killed. A step that ends, fails or is interrupted leaves no mount behind: the mounts belong
  to its mount namespace, which ends with its last process.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dream.errors import DreamError
from dream.oci.compress import decompressed
from dream.oci.descriptor import Descriptor
from dream.oci.tree import DIR, FILE, HARDLINK, SYMLINK, Entry, Tree
from dream.oci.unpack import unpack_layer
from dream.store import Store

ENTRY = str(Path(__file__).with_name("sandbox_entry.py"))
MOUNTPOINTS = ("proc", "dev", "tmp")  # made in the upper directory for the entry's mounts
TAIL = 20  # lines of a failed step's output shown


@dataclass(frozen=True)
class Step:
    """What runs: the command, its environment, its user's ids and where it starts."""

    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: list[int]
    cwd: str
    timeout: int


@dataclass(frozen=True)
class Ran:
    """A finished step: its exit code, its output and the directory its writes landed in."""

    code: int
    log: Path
    upper: Path
    seconds: float

    def tail(self, lines: int = TAIL) -> list[str]:
        text = self.log.read_text(errors="replace").splitlines()
        return text[-lines:]


def require_root(where: str) -> None:
    if os.geteuid() != 0:
        raise DreamError(f"{where}: a run layer needs root (its sandbox mounts overlayfs in a mount "
                         "namespace of its own); build as root")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        raise DreamError(f"{where}: a run layer needs util-linux's unshare and mount on this machine")


def unpacked(store: Store, descriptor: Descriptor) -> Path:
    """The layer ``descriptor`` of ``store`` unpacked for overlayfs, once per diff_id.

    Made under a per-layer flock as ``.<id>.partial`` and renamed into place, so a build that is
    killed halfway leaves nothing another would trust; its leftovers are removed by the next."""
    root = store.rootfs
    name = (descriptor.diffID or descriptor.digest).partition(":")[2]
    final = root / name
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if final.is_dir():
            return final
        partial = root / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with decompressed(open(store.local_blob(descriptor), "rb"), descriptor.mediaType) as stream:
                unpack_layer(stream, partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        os.rename(partial, final)
    return final


def run(lower: list[Path], step: Step, scratch: Path) -> Ran:
    """Run ``step`` over ``lower`` (bottom first) with writes going to ``scratch/upper``.

    Interrupted (Ctrl-C) or past its time limit, the whole namespace is killed first."""
    scratch.mkdir()
    links = scratch / "lower"
    links.mkdir()
    for number, path in enumerate(lower):  # short names: mount options hold one page
        (links / str(number)).symlink_to(path)
    upper = scratch / "upper"
    for directory in ("upper", "work", "merged"):
        (scratch / directory).mkdir()
    for name in MOUNTPOINTS:
        (upper / name).mkdir(mode=0o1777 if name == "tmp" else 0o755)
    spec = {"scratch": str(scratch), "lower": [f"lower/{n}" for n in reversed(range(len(lower)))],
            "argv": step.argv, "env": step.env, "cwd": step.cwd, "uid": step.uid, "gid": step.gid,
            "groups": step.groups}
    (scratch / "spec.json").write_text(json.dumps(spec))
    log = scratch / "log"
    command = ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
               sys.executable, "-I", ENTRY, str(scratch / "spec.json")]
    started = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            output.write(f"\nsandbox: killed after its time limit of {step.timeout} s\n".encode())
            code = -signal.SIGKILL
        except BaseException:
            _kill(process)
            raise
    return Ran(code, log, upper, time.monotonic() - started)


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def collect(upper: Path, outputs: list[str]) -> tuple[Tree, list[str]]:
    """The layer: every entry of ``upper`` at or below one of ``outputs`` (image paths), with
    the directories that lead to them; and the image paths of the writes that were dropped
    (outside the outputs, or deletions, which a layer of outputs does not carry).

    Owners and modes are the ones the step gave them; hard links stay hard links."""
    wanted = [output.strip("/") for output in outputs]
    tree = Tree()
    dropped: list[str] = []
    inodes: dict[tuple[int, int], str] = {}
    for directory, dirnames, filenames in os.walk(upper):
        dirnames.sort()
        here = Path(directory)
        for name in sorted(dirnames + filenames):
            path = here / name
            relative = path.relative_to(upper).as_posix()
            info = path.lstat()
            if "/" not in relative and relative in MOUNTPOINTS and stat.S_ISDIR(info.st_mode):
                dirnames.remove(name)  # the entry's mounts: nothing the step wrote lands here
                continue
            inside = any(_at_or_below(relative, out) for out in wanted)
            leads = stat.S_ISDIR(info.st_mode) and any(_at_or_below(out, relative) for out in wanted)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:  # overlayfs's mark of a deletion
                dropped.append(f"/{relative} (deleted)")
                continue
            if not inside and not leads:
                if not stat.S_ISDIR(info.st_mode) or not os.listdir(path):  # a folder: its writes are named
                    dropped.append("/" + relative)
                continue
            entry = _entry(path, relative, info, inodes)
            if entry is None:
                dropped.append(f"/{relative} (not a file, directory or link)")
            else:
                tree.add(entry)
    return tree, dropped


def missing_outputs(tree: Tree, outputs: list[str]) -> list[str]:
    """The declared outputs the step did not write."""
    return [out for out in outputs if tree.get(out.strip("/")) is None]


def _at_or_below(path: str, top: str) -> bool:
    return top == "" or path == top or path.startswith(top + "/")


def _entry(path: Path, relative: str, info: os.stat_result, inodes: dict[tuple[int, int], str]) -> Entry | None:
    mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
    if stat.S_ISDIR(info.st_mode):
        return Entry(relative, DIR, mode, uid, gid)
    if stat.S_ISLNK(info.st_mode):
        return Entry(relative, SYMLINK, 0o777, uid, gid, link=os.readlink(path))
    if stat.S_ISREG(info.st_mode):
        if info.st_nlink > 1:
            first = inodes.setdefault((info.st_dev, info.st_ino), relative)
            if first != relative:
                return Entry(relative, HARDLINK, mode, uid, gid, link=first)
        return Entry(relative, FILE, mode, uid, gid, size=info.st_size, source=path)
    return None
