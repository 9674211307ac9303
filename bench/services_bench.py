"""dream's process supervisor against honcho, on the same services, in one run.

Why: `doit run:procfile` runs a deployment with dream's supervisor (``python -m dream.supervisor
plan.json``) where a Procfile user would run ``honcho start``. The supervisor does more (start
order, readiness, restarts); this measures what it costs, or saves, on what both do: start N
services, stop them on SIGINT, carry their output, and sit idle. Both run the same deployment:
dream's plan and the Procfile + .env that ``dream.renderers.procfile`` renders from it.

    python bench/services_bench.py [--services 50] [--lines 200000] [--quick]

Times are medians of 3 interleaved runs (1 with --quick), from spawning the manager; the table
and ``bench/out/services.json`` give each figure for both and the ratio honcho/dream.
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
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dream.recipe.load import load_recipe  # noqa: E402
from dream.renderers.procfile import render  # noqa: E402
from dream.services.plan import build_plan, plan_json  # noqa: E402

TOKEN = f"svcbench-{secrets.token_hex(4)}"  # argv token of every service process this run starts
LINE = re.compile(rb"^\d\d:\d\d:\d\d (\S+)\s*\| (.*?)\r?$", re.M)
PAYLOAD = re.compile(rb"\| @(\d{9})x{50}$", re.M)  # one line of the log writer, prefix included
IDLE = "exec python3 -u -c 'import time; print(\"up\", flush=True); time.sleep(1e6)' " + TOKEN
WRITER = ("exec python3 -u -c 'import time; d = b\"\".join(b\"@%09d%s\\n\" % (i, b\"x\" * 50) "
          "for i in range({n})); o = open(1, \"wb\", closefd=False); o.write(b\"go\\n\"); o.flush(); "
          "o.write(d); o.flush(); "
          "time.sleep(1e6)' " + TOKEN)
TICK = os.sysconf("SC_CLK_TCK")


def deployment(root: Path, services: dict[str, str]) -> dict[str, list[str]]:
    """Write the recipe, dream's plan and honcho's Procfile + .env; the two managers' argv."""
    (root / "recipes").mkdir(parents=True)
    recipe = root / "recipes" / "bench.yaml"  # JSON is YAML, and needs no escaping by hand
    recipe.write_text(json.dumps({"services": {k: {"command": c} for k, c in services.items()}}))
    plan = build_plan(load_recipe(recipe, root).deployments["bench"])
    (root / "plan.json").write_text(plan_json(plan))
    for rel, (text, mode) in render(plan, root, root / "procfile").items():
        (root / "procfile" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "procfile" / rel).write_text(text)
        (root / "procfile" / rel).chmod(mode)
    honcho = [shutil.which("honcho") or sys.executable, *([] if shutil.which("honcho") else ["-m", "honcho"])]
    return {"dream": [sys.executable, "-m", "dream.supervisor", str(root / "plan.json"), "--root", str(root)],
            "honcho": [*honcho, "-d", str(root / "procfile"), "start"]}


def proc_table() -> dict[int, tuple[int, str, bytes]]:
    """pid → (parent pid, state, cmdline) for every process, from /proc."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0].decode(), cmdline)
    return table


def services_alive() -> list[int]:
    """Live (not zombie) processes with this run's token in their argv."""
    return [pid for pid, (_, state, cmd) in proc_table().items()
            if state != "Z" and TOKEN.encode() in cmd and pid != os.getpid()]


def manager_side(root: int) -> list[int]:
    """The manager and its descendants that are not services (honcho's per-service helpers)."""
    table, found, todo = proc_table(), [root], [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, state, cmd) in table.items():
            if ppid == parent and state != "Z" and TOKEN.encode() not in cmd:
                found.append(pid)
                todo.append(pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes, all threads: the kernel's per-process CPU clock (what
    clock_getcpuclockid gives, in ns), or utime + stime from /proc/PID/stat where it cannot be
    read; those count in clock ticks (10 ms: 0.2 % of a core over 5 s, too coarse for idle)."""
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of the whole process
            continue
        except OSError:
            pass
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
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
    """Reads a manager's stdout as it arrives: when every service has said "up"; when the log
    writer's "go" line (written just before its lines) arrived, how many of its lines came in
    and when the last did."""

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
                self.ups.update(n for n, text in LINE.findall(whole) if text == b"up")
                if len(self.ups) >= self.expect_ups:
                    self.t_up = now
                    self.all_up.set()
            if self.expect_lines:
                self.text += whole
                if not self.go and b"| go\n" in whole:
                    self.go = now
                found = whole.count(b"| @")
                self.count += found
                if found:
                    self.last = now
                if self.count >= self.expect_lines:
                    self.all_lines.set()


def start(argv: list[str], ups: int = 0, lines: int = 0) -> tuple[subprocess.Popen, Reader, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reader = Reader(proc, ups, lines)
    reader.start()
    return proc, reader, t0


def stop(proc: subprocess.Popen, reader: Reader) -> float:
    """SIGINT; seconds until the manager has exited and no service process is left."""
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


def idle_run(argv: list[str], services: int, idle: float) -> dict[str, float]:
    proc, reader, t0 = start(argv, ups=services)
    try:
        if not reader.all_up.wait(120):
            raise RuntimeError(f"{argv[0]}: only {len(reader.ups)} of {services} services up in 120 s")
        started = reader.t_up - t0
        time.sleep(1.0)  # let start-up settle before sampling
        own, side = [proc.pid], manager_side(proc.pid)
        own0, side0, w0 = cpu_seconds(own), cpu_seconds(side), time.perf_counter()
        time.sleep(idle)
        wall = time.perf_counter() - w0
        result = {"all_started_s": started, "idle_cpu_pct": 100 * (cpu_seconds(own) - own0) / wall,
                  "idle_cpu_side_pct": 100 * (cpu_seconds(side) - side0) / wall,
                  "side_processes": len(side), "pss_mib": pss_mib(side)}
        result["all_stopped_s"] = stop(proc, reader)
        return result
    finally:
        cleanup(proc)


def log_run(argv: list[str], lines: int) -> dict[str, Any]:
    proc, reader, _ = start(argv, lines=lines)
    try:
        reader.all_lines.wait(300)
        time.sleep(0.5)  # a manager that printed too many lines would show it now
        stop(proc, reader)
        numbers = PAYLOAD.findall(bytes(reader.text))
        correct = (reader.count == lines == len(numbers)
                   and all(int(n) == i for i, n in enumerate(numbers)))
        span = reader.last - reader.go
        rate = reader.count / span if reader.go and span > 0 else float("nan")
        return {"lines_per_s": rate, "lines_seen": reader.count, "line_correct": correct}
    finally:
        cleanup(proc)


def cleanup(proc: subprocess.Popen) -> None:
    """Leave nothing behind, whatever happened: the manager's group, then the services."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in services_alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50, help="sleeping services (default 50)")
    parser.add_argument("--lines", type=int, help="lines the log writer prints (default 200000)")
    parser.add_argument("--quick", action="store_true", help="1 run each, 2 s idle sample, 50000 lines")
    args = parser.parse_args()
    runs, idle = (1, 2.0) if args.quick else (3, 5.0)
    lines = args.lines or (50_000 if args.quick else 200_000)
    managers = ("dream", "honcho")
    with tempfile.TemporaryDirectory(prefix="services-bench-") as scratch:
        idle_argv = deployment(Path(scratch) / "idle", {f"s{i:02d}": IDLE for i in range(args.services)})
        log_argv = deployment(Path(scratch) / "log", {"log": WRITER.format(n=lines)})
        results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"idle": [], "log": []} for m in managers}
        for i in range(runs):  # interleaved, so both see the same machine
            for m in managers:
                results[m]["idle"].append(idle_run(idle_argv[m], args.services, idle))
                print(f"run {i + 1}/{runs} {m}: {args.services} services {results[m]['idle'][-1]}", flush=True)
            for m in managers:
                results[m]["log"].append(log_run(log_argv[m], lines))
                print(f"run {i + 1}/{runs} {m}: {lines} lines {results[m]['log'][-1]}", flush=True)
    rows: list[tuple[str, str, Callable[[str], float], str]] = [
        (f"time to all started ({args.services} services)", "s", lambda m: median(results[m]["idle"], "all_started_s"), "lower"),
        ("time to all stopped after SIGINT", "s", lambda m: median(results[m]["idle"], "all_stopped_s"), "lower"),
        (f"log throughput (1 service, {lines} lines)", "lines/s", lambda m: median(results[m]["log"], "lines_per_s"), "higher"),
        (f"idle CPU, manager process ({idle:g} s sample)", "% of a core", lambda m: median(results[m]["idle"], "idle_cpu_pct"), "lower"),
        ("idle CPU, manager + its helper processes", "% of a core", lambda m: median(results[m]["idle"], "idle_cpu_side_pct"), "lower"),
        ("manager-side processes (manager + helpers)", "count", lambda m: median(results[m]["idle"], "side_processes"), "lower"),
        ("memory of those processes (PSS)", "MiB", lambda m: median(results[m]["idle"], "pss_mib"), "lower"),
    ]
    table = []
    for name, unit, get, better in rows:
        d, h = get("dream"), get("honcho")
        table.append({"metric": name, "unit": unit, "dream": d, "honcho": h,
                      "honcho_over_dream": h / d if d else None, "better": better})
    correct = {m: all(r["line_correct"] for r in results[m]["log"]) for m in managers}
    head = f"| {'metric':<46} | {'unit':<11} | {'dream':>10} | {'honcho':>10} | honcho/dream | better |"
    print("\n" + head + "\n|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for row in table:
        ratio = f"{row['honcho_over_dream']:.3g}" if row["honcho_over_dream"] is not None else "n/a"
        fmt = ",.0f" if row["unit"] in ("lines/s", "count") else (".3f" if row["unit"] == "s" else ".2f")
        print(f"| {row['metric']:<46} | {row['unit']:<11} | {row['dream']:>10{fmt}} | {row['honcho']:>10{fmt}} "
              f"| {ratio:>12} | {row['better']:>6} |")
    print(f"\nline-correct (exactly {lines} lines, intact, in order, every run): "
          + ", ".join(f"{m} {'yes' if ok else 'NO'}" for m, ok in correct.items()))
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": runs, "services": args.services,
              "lines": lines, "idle_sample_s": idle, "nproc": os.cpu_count(), "python": platform.python_version(),
              "honcho": version("honcho"), "table": table, "line_correct": correct, "raw": results}
    out = REPO / "bench" / "out" / "services.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {out.relative_to(REPO)}")
    left = services_alive()
    if left:
        print(f"warning: {len(left)} service processes left: {left}", file=sys.stderr)
    return 0 if all(correct.values()) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
