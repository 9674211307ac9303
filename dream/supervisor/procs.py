"""Process plumbing: spawning a command in its own process group, signalling groups, reaping,
and finding every descendant (so nothing a service forked, even into a new session, outlives
the supervisor)."""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from . import runstate

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux, or no libc to ask
    _prctl = None


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux), as PID 1 does anyway, so they can be reaped and
    killed at shutdown. Returns False where the kernel or libc refuses."""
    if os.getpid() == 1:
        return True
    return _prctl is not None and _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _die_with(parent: int):  # type: ignore[no-untyped-def]
    """A ``preexec_fn``: the child gets SIGKILL when the thread that spawned it (the supervisor's
    loop) dies, even by SIGKILL. It runs after the switch to the service's user (a change of
    credentials would clear it) and survives the exec (not of a set-user-ID program). A parent
    that died before this ran is caught by the ``getppid`` check."""
    def preexec() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


@dataclass(frozen=True)
class Identity:
    """Who a service runs as: uid, gid, supplementary groups, and the account's name and home."""

    uid: int
    gid: int
    groups: list[int]
    name: str
    home: str


def identity_of(user: str) -> Identity:
    """``name``, ``uid`` or ``uid:gid`` → the identity to switch to (KeyError: unknown)."""
    name, _, group = user.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid, login, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
    except KeyError:
        if not name.isdigit():
            raise
        uid, gid, login, home = int(name), int(name), name, "/"
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    groups = sorted({g.gr_gid for g in grp.getgrall() if login in g.gr_mem} | {gid})
    return Identity(uid, gid, groups, login, home)


def spawn(argv: list[str], env: dict[str, str], cwd: str | None, who: Identity | None,
          capture: bool = True) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session (so its process group is its own), with
    stdout and stderr on one pipe and stdin from /dev/null. Raises OSError when it cannot exec."""
    kwargs: dict[str, Any] = {}
    if who is not None and (who.uid != os.getuid() or who.gid != os.getgid()):
        kwargs = {"user": who.uid, "group": who.gid, "extra_groups": who.groups}
    return subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True, preexec_fn=_die_with(os.getpid()), **kwargs)


def signal_group(pgid: int, number: int) -> bool:
    """Send ``number`` to a whole process group; False when the group is gone."""
    try:
        os.killpg(pgid, number)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, from one scan of /proc (runstate's, which the
    watchdog shares)."""
    return runstate.below(root, runstate.snapshot())


def kill_descendants(root: int, spare: set[int] | frozenset[int] = frozenset()) -> int:
    """SIGKILL everything below ``root`` but ``spare`` (and what is below it); returns how many
    were signalled."""
    count = 0
    table = runstate.snapshot()  # one scan of /proc for the whole tree
    spared = set(spare)
    for pid in spare:
        spared.update(runstate.below(pid, table))
    for pid in runstate.below(root, table):
        if pid in spared:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count


def reap() -> list[tuple[int, int]]:
    """Collect every exited child without blocking: (pid, wait status) pairs."""
    done: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def describe_status(status: int) -> tuple[int, str]:
    """A wait status → (exit code as a shell reports it, words)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return 128 + number, f"killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    return code, f"exited with code {code}"
