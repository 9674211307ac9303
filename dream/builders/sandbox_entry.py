"""The first process inside a `run` layer's sandbox (started by dream/builders/sandbox.py).

``unshare --mount --net --pid --ipc --uts --fork python3 -I sandbox_entry.py SPEC`` runs this
in namespaces of its own, as root, still on the host's file system. It:

1. mounts the overlay: the unpacked lower layers (read-only), the upper directory where every
   write lands (the sandbox's scratch), at ``merged``;
2. mounts ``/proc`` (of the new PID namespace), a ``/dev`` tmpfs with the host's null, zero,
   full, random, urandom and tty bound into it, and a tmpfs at ``/tmp`` (never in the layer);
3. forks the step: ``chroot`` into the overlay, the working directory, the user's groups, gid
   and uid, the fixed environment, ``exec`` of the command;
4. stays PID 1 of the namespace meanwhile (reaping orphans) and exits with the step's status
   (128 + N for a signal). Its exit ends the namespaces, and with them every mount.

SPEC is a JSON file: scratch, lower (relative to scratch, topmost first), argv, env, cwd, uid,
gid, groups. Standard library only, no import of dream: it runs in the host's Python before
anything of the image exists in the sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
MOUNT_FAILED = 125  # the sandbox itself failed (not the step): the log says why
EXEC_FAILED = 127


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def prepare(spec: dict[str, Any]) -> None:
    os.chdir(spec["scratch"])
    mount("-t", "overlay", "overlay", "-o",
          f"lowerdir={':'.join(spec['lower'])},upperdir=upper,workdir=work", "merged")
    mount("-t", "proc", "proc", "merged/proc")
    mount("-t", "tmpfs", "-o", "mode=0755,nosuid", "dev", "merged/dev")
    for name in DEVICES:
        open(f"merged/dev/{name}", "w").close()
        mount("--bind", f"/dev/{name}", f"merged/dev/{name}")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"merged/dev/{name}")
    os.mkdir("merged/dev/shm", 0o1777)
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", "merged/dev/shm")
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmp", "merged/tmp")


def step(spec: dict[str, Any]) -> None:
    """In the forked child: become the step, or say why not and exit 127."""
    try:
        os.chroot("merged")
        os.chdir(spec["cwd"])
        os.setgroups(spec["groups"])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        os.umask(0o022)
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        print(f"sandbox: cannot run {spec['argv'][0]}: {exc.strerror}"
              + (f" ({exc.filename})" if exc.filename else ""), file=sys.stderr, flush=True)
    os._exit(EXEC_FAILED)


def main() -> int:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    try:
        prepare(spec)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"sandbox: cannot set up the sandbox: {exc}", file=sys.stderr, flush=True)
        return MOUNT_FAILED
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        step(spec)
    while True:
        pid, status = os.wait()
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
