"""Nothing outlives the supervisor, even when it is killed with SIGKILL.

Three parts, each covering what the one before cannot:

1. Every process the supervisor spawns (a service's leader, an exec probe) gets
   ``PR_SET_PDEATHSIG(SIGKILL)`` (see procs.spawn): the kernel kills it the moment the supervisor's
   loop thread dies, whatever killed it. A leader's own children do not inherit that.
2. The *run state* (``<runtime_dir>/run-state.json``, written atomically): the supervisor's pid
   and start time, the sessions of everything it spawned (each is a session leader), and every
   process below it with its start time (``/proc/<pid>/stat`` field 22), refreshed each second
   while it runs. A grandchild that escaped into a session of its own still comes to the
   supervisor (a child subreaper) while it lives, so the scan sees it.
3. The *watchdog*: this file run as a script (``python3 -I runstate.py STATE``), started first,
   in a session of its own, holding the read end of a pipe only the supervisor writes to. When the
   supervisor dies the pipe ends; unless it said ``done`` first, the watchdog kills what the run
   state names (`clean`) and exits. The next ``run:`` of the deployment does the same with a
   run state it finds whose supervisor is gone (so a SIGKILL of the watchdog too is repaired at
   the latest then).

A process is killed only when its start time matches the recorded one (a reused pid is never
hit), or when it belongs to a recorded session and started before the supervisor died (the
watchdog) or before the run state's last refresh plus `REFRESH` (the next run). What cannot be caught: a grandchild that left its session less than a
second before the supervisor was killed, when the watchdog was killed as well. As PID 1 none of
this runs: the kernel kills the whole pid namespace with it.

Standard library only and no imports from this package: the file also runs as a script.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

STATE_VERSION = 1
TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, int, int, int] | None:
    """(ppid, pgrp, session, start time in ticks since boot) of a live process; None when it
    is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[3] if stat else None


def snapshot() -> dict[int, tuple[int, int, int, int]]:
    """Every live process: pid → (ppid, pgrp, session, start)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                found[int(entry)] = stat
    return found


def below(root: int, table: dict[int, tuple[int, int, int, int]]) -> list[int]:
    """Every process of ``table`` below ``root``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def now_ticks() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * TICKS)


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def write_state(path: str, state: dict[str, Any]) -> None:
    """Atomically (temp file and rename); OSError when the directory is not writable."""
    state = {**state, "version": STATE_VERSION, "boot_id": boot_id(), "updated": now_ticks()}
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump(state, f)
    os.replace(temporary, path)


def read_state(path: str) -> dict[str, Any] | None:
    """The run state at ``path``; None when there is none, or it is unreadable, of another boot
    or another version (then nothing it names can still run)."""
    try:
        with open(path, "rb") as f:
            state = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(state, dict) or state.get("version") != STATE_VERSION
            or state.get("boot_id") != boot_id()):
        return None
    return state


def alive(record: Any) -> bool:
    """``[pid, start]`` names a process that runs now."""
    try:
        pid, start = int(record[0]), int(record[1])
    except (TypeError, ValueError, IndexError):
        return False
    return start_time(pid) == start


REFRESH = 10.0  # seconds: the supervisor rewrites its run state at least this often


def targets(state: dict[str, Any], table: dict[int, tuple[int, int, int, int]], spare: set[int],
            limit: int) -> set[int]:
    """What ``state`` says must go: recorded processes that still are who they were, members of
    recorded sessions that started before ``limit`` (ticks since boot), and everything below them."""
    me = os.getpid()
    sessions = {int(s) for s in state.get("sessions", []) if isinstance(s, int)}
    chosen = set()
    for record in state.get("pids", []):
        try:
            pid, start = int(record[0]), int(record[1])
        except (TypeError, ValueError, IndexError):
            continue
        if pid in table and table[pid][3] == start:
            chosen.add(pid)
    for pid, (_ppid, _pgrp, session, start) in table.items():
        if session in sessions and start <= limit:
            chosen.add(pid)
    for pid in list(chosen):
        chosen.update(below(pid, table))
    return chosen - spare - {me, 1}


def clean(state: dict[str, Any], spare: frozenset[int] = frozenset(), limit: int | None = None,
          rounds: int = 50) -> int:
    """SIGKILL what ``state`` names, again until nothing is left (a process that forked while it
    was killed leaves a child in its session); returns how many processes were killed. Session
    members count when they started before ``limit`` (default: the state's last refresh plus
    `REFRESH` and a second: what started later is not the crashed run's)."""
    if limit is None:
        limit = int(state.get("updated", 0)) + int((REFRESH + 1) * TICKS)
    killed: set[int] = set()
    quiet = 0
    for _ in range(rounds):
        found = targets(state, snapshot(), set(spare), limit)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        quiet = 0 if found else quiet + 1
        if quiet >= 2:
            break
        time.sleep(0.02)
    return len(killed)


def watch(path: str, fd: int = 0) -> int:
    """The watchdog: wait for the supervisor's pipe to end; clean up unless it said ``done``."""
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
        signal.signal(number, signal.SIG_IGN)
    said = b""
    while True:
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        said = (said + chunk)[-16:]
    if said.endswith(b"done"):
        return 0
    died = now_ticks() + TICKS  # the supervisor just died: its sessions hold nothing newer
    state = read_state(path)
    if state is not None:
        clean(state, limit=died)
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1]))
