"""dream's process supervisor against honcho, on the same services, in one run.

Why: `doit run:procfile` runs a deployment under dream's supervisor (``python -m dream.supervisor
plan.json``) where a Procfile user would run ``honcho start``. The supervisor does more (start
order, readiness, restarts); this measures what that costs, or saves, on what both do: start N
services, stop them on SIGINT, carry their output, sit idle. Both run the same deployment:
dream's plan, and the Procfile + .env that ``dream.renderers.procfile`` renders from it.

    python bench/services_bench.py [--services 50] [--lines 200000] [--quick]

Each figure is the median of 3 runs (1 with --quick), dream and honcho interleaved; the table
and ``bench/out/services.json`` give both and the ratio honcho/dream.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dream.recipe.load import load_recipe
from dream.managers.host import read_env_files, write_files
from dream.renderers import RENDERERS
from dream.renderers.base import Target
from dream.services.plan import build_plan, plan_json

TOKEN = f"svcbench-{secrets.token_hex(4)}"  # in the argv of every service this run starts
UP = re.compile(rb"^\d\d:\d\d:\d\d (\S+)\s*\| up\r?$", re.MULTILINE)
PAYLOAD = re.compile(rb"\| @(\d{9})x{50}$", re.MULTILINE)  # one line of the log writer, prefix included
IDLE = "exec python3 -u -c 'import time; print(\"up\", flush=True); time.sleep(1e6)' " + TOKEN
# Lines built first, then "go" and all of them in one big write (a BufferedWriter: no short writes).
WRITER = ("exec python3 -u -c 'import time; d = b\"\".join(b\"@%09d%s\\n\" % (i, b\"x\" * 50) for i in "
          "range({n})); o = open(1, \"wb\", closefd=False); o.write(b\"go\\n\"); o.flush(); o.write(d); "
          "o.flush(); time.sleep(1e6)' " + TOKEN)


def deployment(root: Path, services: dict[str, str]) -> dict[str, list[str]]:
    """Write the recipe, dream's plan and honcho's Procfile + .env; return both managers' argv."""
    (root / "recipes").mkdir(parents=True)
    recipe = root / "recipes" / "bench.yaml"  # JSON is YAML, and needs no quoting by hand
    recipe.write_text(json.dumps({"services": {k: {"command": c} for k, c in services.items()}}))
    plan = build_plan(load_recipe(recipe, root).deployments["bench"])
    (root / "plan.json").write_text(plan_json(plan))
    out = root / "procfile"
    write_files(out, RENDERERS["procfile"].render(plan, Target(root, out, read_env_files(plan, root))))
    honcho = [shutil.which("honcho")] if shutil.which("honcho") else [sys.executable, "-m", "honcho"]
    return {"dream": [sys.executable, "-m", "dream.supervisor", str(root / "plan.json"), "--root", str(root)],
            "honcho": [*honcho, "-d", str(root / "procfile"), "start"]}  # type: ignore[list-item]


def proc_table() -> dict[int, tuple[int, bool, bool]]:
    """pid → (parent pid, zombie, has this run's token in its argv), from /proc."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            ours = TOKEN.encode() in Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0] == b"Z", ours)
    return table


def services_alive() -> list[int]:
    return [pid for pid, (_, zombie, ours) in proc_table().items() if ours and not zombie]


def manager_side(manager: int) -> list[int]:
    """The manager and its descendants that are not services (honcho's helper per service)."""
    table, found, todo = proc_table(), [manager], [manager]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, zombie, ours) in table.items() if pp == parent and not zombie and not ours]
        found += kids
        todo += kids
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of whole processes from the kernel's per-process CPU clock (clock_getcpuclockid,
    ns). utime + stime in /proc/PID/stat count 10 ms ticks: 0.2 % of a core over 5 s, too coarse."""
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED, process-wide
        except OSError:
            pass  # it has exited
    return total


def pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return total / 1024


class Reader(threading.Thread):
    """Reads a manager's stdout as it arrives: when the last service said "up"; when the log
    writer's "go" line arrived, how many of its lines followed and when the last one did."""

    def __init__(self, proc: subprocess.Popen, ups: int, lines: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.expect_ups, self.expect_lines = proc, ups, lines
        self.ups: set[bytes] = set()
        self.all_up, self.all_lines = threading.Event(), threading.Event()
        self.t_up = self.go = self.last = 0.0
        self.count = 0
        self.text = bytearray()

    def run(self) -> None:
        fd, tail = self.proc.stdout.fileno(), b""  # type: ignore[union-attr]
        while chunk := os.read(fd, 1 << 20):
            now = time.perf_counter()
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            whole, tail = data[:cut], data[cut:]
            if self.expect_ups and not self.all_up.is_set():
                self.ups.update(UP.findall(whole))
                if len(self.ups) >= self.expect_ups:
                    self.t_up = now
                    self.all_up.set()
            if self.expect_lines:
                self.text += whole
                self.go = self.go or (now if b"| go\n" in whole else 0.0)
                if found := whole.count(b"| @"):
                    self.count, self.last = self.count + found, now
                if self.count >= self.expect_lines:
                    self.all_lines.set()


def start(argv: list[str], ups: int = 0, lines: int = 0) -> tuple[subprocess.Popen, Reader, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reader = Reader(proc, ups, lines)
    reader.start()
    return proc, reader, t0


def stop(proc: subprocess.Popen, reader: Reader) -> float:
    """SIGINT to the manager; seconds until it has exited and no service process is left."""
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    while services_alive():
        if time.perf_counter() - t0 > 60:
            raise RuntimeError("services still alive 60 s after SIGINT")
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    reader.join(timeout=10)
    return elapsed


def cleanup(proc: subprocess.Popen) -> None:
    """Leave nothing behind, whatever happened: the manager's group, then every service."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in services_alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def idle_run(argv: list[str], services: int, idle: float) -> dict[str, float]:
    proc, reader, t0 = start(argv, ups=services)
    try:
        if not reader.all_up.wait(120):
            raise RuntimeError(f"{argv[0]}: {len(reader.ups)} of {services} services up after 120 s")
        started = reader.t_up - t0
        time.sleep(1.0)  # let start-up settle
        side = manager_side(proc.pid)
        own0, side0, w0 = cpu_seconds([proc.pid]), cpu_seconds(side), time.perf_counter()
        time.sleep(idle)
        wall = time.perf_counter() - w0
        return {"all_started_s": started, "idle_cpu_pct": 100 * (cpu_seconds([proc.pid]) - own0) / wall,
                "idle_cpu_side_pct": 100 * (cpu_seconds(side) - side0) / wall,
                "side_processes": len(side), "pss_mib": pss_mib(side), "all_stopped_s": stop(proc, reader)}
    finally:
        cleanup(proc)


def log_run(argv: list[str], lines: int) -> dict[str, Any]:
    proc, reader, _ = start(argv, lines=lines)
    try:
        reader.all_lines.wait(300)
        time.sleep(0.5)  # lines beyond the expected ones would show now
        stop(proc, reader)
        numbers = PAYLOAD.findall(bytes(reader.text))
        correct = reader.count == lines == len(numbers) and all(int(n) == i for i, n in enumerate(numbers))
        span = reader.last - reader.go
        return {"lines_per_s": reader.count / span if reader.go and span > 0 else float("nan"),
                "lines_seen": reader.count, "line_correct": correct}
    finally:
        cleanup(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50, help="sleeping services (default 50)")
    parser.add_argument("--lines", type=int, help="lines the log writer prints (default 200000)")
    parser.add_argument("--quick", action="store_true", help="1 run each, 2 s idle sample, 50000 lines")
    args = parser.parse_args()
    runs, idle = (1, 2.0) if args.quick else (3, 5.0)
    lines = args.lines or (50_000 if args.quick else 200_000)
    managers = ("dream", "honcho")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"idle": [], "log": []} for m in managers}
    with tempfile.TemporaryDirectory(prefix="services-bench-") as scratch:
        idle_argv = deployment(Path(scratch) / "idle", {f"s{i:02d}": IDLE for i in range(args.services)})
        log_argv = deployment(Path(scratch) / "log", {"log": WRITER.format(n=lines)})
        for i in range(runs):  # interleaved, so both see the same machine
            for m in managers:
                results[m]["idle"].append(idle_run(idle_argv[m], args.services, idle))
                print(f"run {i + 1}/{runs} {m} idle: {results[m]['idle'][-1]}", flush=True)
            for m in managers:
                results[m]["log"].append(log_run(log_argv[m], lines))
                print(f"run {i + 1}/{runs} {m} log: {results[m]['log'][-1]}", flush=True)

    def median(m: str, kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[m][kind])

    rows = [(f"time to all started ({args.services} services)", "s", "idle", "all_started_s", "lower"),
            ("time to all stopped after SIGINT", "s", "idle", "all_stopped_s", "lower"),
            (f"log throughput (1 service, {lines} lines)", "lines/s", "log", "lines_per_s", "higher"),
            (f"idle CPU of the manager process ({idle:g} s)", "% of core", "idle", "idle_cpu_pct", "lower"),
            ("manager-side processes (manager + helpers)", "count", "idle", "side_processes", "lower"),
            ("memory of those processes (PSS)", "MiB", "idle", "pss_mib", "lower")]
    table = []
    for name, unit, kind, key, better in rows:
        d, h = median("dream", kind, key), median("honcho", kind, key)
        table.append({"metric": name, "unit": unit, "dream": d, "honcho": h, "better": better,
                      "honcho_over_dream": h / d if d else None,  # dream_advantage > 1: dream is better
                      "dream_advantage": (h / d if better == "lower" else d / h) if d and h else None})
    correct = {m: all(r["line_correct"] for r in results[m]["log"]) for m in managers}
    head = (f"| {'metric':<44} | {'unit':<9} | {'dream':>10} | {'honcho':>10} | honcho/dream | better "
            f"| dream better by |")
    print("\n" + head + "\n|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for row in table:
        fmt = {"lines/s": ",.0f", "count": ",.0f", "MiB": ".2f"}.get(row["unit"], ".3f")
        ratio, adv = (f"{row[k]:.3g}" if row[k] is not None else "n/a"
                      for k in ("honcho_over_dream", "dream_advantage"))
        print(f"| {row['metric']:<44} | {row['unit']:<9} | {row['dream']:>10{fmt}} | {row['honcho']:>10{fmt}} "
              f"| {ratio:>12} | {row['better']:>6} | {adv + ' x':>15} |")
    print(f"\nline-correct (exactly {lines} lines, intact, in order, every run): "
          + ", ".join(f"{m} {'yes' if ok else 'NO'}" for m, ok in correct.items()))
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": runs, "services": args.services,
              "lines": lines, "idle_sample_s": idle, "nproc": os.cpu_count(),
              "python": platform.python_version(), "honcho": version("honcho"), "table": table,
              "line_correct": correct, "raw": results}
    out = REPO / "bench" / "out" / "services.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {out.relative_to(REPO)}")
    if left := services_alive():
        print(f"warning: service processes left: {left}", file=sys.stderr)
    return 0 if all(correct.values()) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
