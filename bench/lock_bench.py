"""Lock benchmark: `doit lock` of a real PyTorch app against downloading its wheels, and against
a bare resolution.

Run from the repository root:   python bench/lock_bench.py [--quick] [--runs 2] [--keep]

Why: a dream lock pins every wheel by file name, size and sha256 and reads each wheel's member
list by HTTP range reads of the zip's central directory; it downloads no wheel (issue 11). What a
lock had to do before is download every wheel it pinned; the least any lock can do is resolve.
All three are measured in one run, on this machine, for the same app:

- **dream**: a scratch project as ``tests/conftest.py``'s ``make_project`` makes it (dodo.py, the
  shipped presets as ``layers/``) with ``recipes/torch-app.yaml``: ``imports: [debian-python,
  cuda-12]``, Python 3.11, a ``cuda`` layer ``{version: python, components: [cudart, cublas,
  nvrtc]}`` and a ``python`` layer ``{requirements: [torch==2.8.0]}``. ``doit lock:torch-app``
  with an empty ``DREAM_CACHE`` and an empty uv cache (``UV_CACHE_DIR``), both fresh directories,
  then again with nothing changed (same caches, the lock on disk); ``--runs`` rounds (default 2),
  each in a fresh project with fresh caches, medians reported. Also ``doit lock:torch-wheels``:
  the same two wheel layers without the Debian layer, with fresh empty caches of its own.
- **pip download** (skipped by ``--quick``: about 3.9 GB): ``pip download --no-deps --only-binary
  :all:`` of every wheel the dream lock pinned (``name==version``), for the lock's platform tags
  and Python 3.11, with ``--no-cache-dir``, into a fresh directory; the files are checked
  against the lock's names and sizes.
- **uv pip compile** of ``torch==2.8.0`` alone (resolution only, the lower bound), with uv's cache
  in a fresh directory, then again with that cache warm.

Every command is timed with ``time.perf_counter`` (process start-up included) and its network
bytes are the growth of /proc/net/dev's receive counters of every interface but ``lo`` over the
command: the whole machine's (its network namespace's) traffic, not the command's alone. The
index settings are the machine's pip configuration (dream hands them to uv; pip reads them
itself); nothing here names an index. Everything happens in ``bench/out/lock-*`` (git-ignored),
removed at the end (``--keep`` keeps it). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dream.python.index import uv_environment, uv_index_args
from dream.python.resolve import _uv
from dream.python.target import PythonTarget

REPO = Path(__file__).resolve().parent.parent
IMAGE = "torch-app"
TORCH = "torch==2.8.0"
PYTHON = "3.11"
PLATFORM = "manylinux_2_36_x86_64"  # python.platform's default for amd64 (Debian 12, glibc 2.36)
WHEEL_LAYERS = f"""python:
  version: "{PYTHON}"
layers:
  - name: cuda
    cuda:
      version: python
      components: [cudart, cublas, nvrtc]
  - name: python
    python:
      requirements: [{TORCH}]
"""
RECIPE = f"""# A PyTorch app: Debian 12 + Python 3.11, CUDA from torch's own pins, torch.
imports: [debian-python, cuda-12]
image:
  name: {IMAGE}
  tags: [latest]
""" + WHEEL_LAYERS
# the same two wheel layers without the Debian layer and its apt lists (where the cold lock's
# bytes go), to see what locking the wheels alone costs against uv's bare resolution
WHEELS_ONLY = "torch-wheels"
WHEELS_RECIPE = f"image:\n  name: {WHEELS_ONLY}\n" + WHEEL_LAYERS


# --------------------------------------------------------------------------- measuring

def rx_bytes() -> dict[str, int]:
    """Receive byte counters of every network interface but loopback (/proc/net/dev)."""
    counters = {}
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, _, fields = line.partition(":")
        if name.strip() != "lo":
            counters[name.strip()] = int(fields.split()[0])
    return counters


@dataclass
class Run:
    """One measured command: wall seconds, bytes received by the machine meanwhile (in all and
    by interface), its output, and for each output line the seconds at which it arrived."""

    seconds: float
    rx: int
    rx_by_interface: dict[str, int]
    output: str = field(repr=False)
    stamps: list[tuple[float, str]] = field(default_factory=list, repr=False)


def measured(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` (stdout and stderr merged, read line by line) and measure it; a failure
    stops the benchmark."""
    before = rx_bytes()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    assert proc.stdout is not None
    stamps = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    rc = proc.wait()
    seconds = time.perf_counter() - start
    after = rx_bytes()
    output = "\n".join(line for _, line in stamps)
    if rc != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {rc}):\n{output[-3000:]}")
    delta = {name: after[name] - before.get(name, 0) for name in after}
    return Run(seconds, sum(delta.values()), {n: d for n, d in delta.items() if d}, output, stamps)


def tree_bytes(path: Path) -> int:
    """Apparent size of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
    return total


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- the three sides

def make_project(root: Path) -> Path:
    """dodo.py, the shipped presets as layers/ and recipes/torch-app.yaml (as tests/conftest.py's
    make_project(with_demo=False) with one recipe)."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(REPO / "dream" / "presets", root / "layers",
                    ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    (root / "recipes").mkdir()
    (root / "recipes" / f"{IMAGE}.yaml").write_text(RECIPE)
    (root / "recipes" / f"{WHEELS_ONLY}.yaml").write_text(WHEELS_RECIPE)
    return root


def dream_lock(project: Path, cache: Path, uv_cache: Path, store: Path, image: str = IMAGE) -> Run:
    env = {**os.environ, "DREAM_CACHE": str(cache), "UV_CACHE_DIR": str(uv_cache),
           "DREAM_STORE": str(store)}
    return measured([sys.executable, "-m", "doit", f"lock:{image}"], cwd=project, env=env)


def pip_download(wheels: list[dict], dest: Path, scratch: Path) -> Run:
    """What a lock had to do before: fetch every pinned wheel, pip's cache off."""
    target = PythonTarget(PYTHON, PLATFORM, "/usr/local")
    scratch.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-cache-dir",
           *(arg for tag in target.platforms() for arg in ("--platform", tag)),
           "--python-version", PYTHON, "--implementation", "cp",
           "--abi", target.abi, "--abi", "abi3", "--abi", "none",
           "-d", str(dest), "--progress-bar", "off", "--quiet",
           *(f"{w['name']}=={w['version']}" for w in wheels)]
    return measured(cmd, env={**os.environ, "TMPDIR": str(scratch)})


def uv_compile(work: Path, uv_cache: Path) -> Run:
    """Resolution only: `uv pip compile` of the same requirement for the same interpreter."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "requirements.in").write_text(TORCH + "\n")
    target = PythonTarget(PYTHON, PLATFORM, "/usr/local")
    cmd = [*_uv(), "pip", "compile", str(work / "requirements.in"), "--python-version", PYTHON,
           "--python-platform", target.uv_platform(), "--only-binary", ":all:",
           "--index-strategy", "unsafe-best-match", "--cache-dir", str(uv_cache),
           "--output-file", str(work / "requirements.txt"), "--no-header", "--quiet", *uv_index_args()]
    return measured(cmd, env=uv_environment())


# --------------------------------------------------------------------------- report

def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def secs(value: float) -> str:
    return f"{value:.2f} s"


def size(value: int) -> str:
    return f"{value:,} B" + (f" ({value / 1e6:,.1f} MB)" if value >= 1e6 else "")


def ratio(peer: float | None, dream: float) -> str:
    if peer is None:
        return "n/a"
    if not dream:
        return "n/a (dream 0)"
    return f"{peer / dream:.2f}"


def facts() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout.split()
    uv = subprocess.run([*_uv(), "--version"], capture_output=True, text=True).stdout.strip()
    return [f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"machine: nproc {os.cpu_count()}, {cpu}, {mem / 2**20:.1f} GiB RAM",
            f"Python {sys.version.split()[0]}, pip {pip[1] if len(pip) > 1 else '?'}, {uv}"]


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(runs: list[Run], what: str) -> str:
    """Every run's figure, for the notes."""
    if what == "seconds":
        return ", ".join(secs(r.seconds) for r in runs)
    return ", ".join(f"{r.rx:,} B" for r in runs)


@dataclass
class Round:
    """One round: dream's cold lock and re-lock in a fresh project with fresh caches, then uv
    with a fresh cache, cold and warm."""

    cold: Run
    again: Run
    wheels_only: Run               # the cuda + python layers alone, fresh caches
    uv_cold: Run
    uv_warm: Run
    cache: dict[str, int]          # DREAM_CACHE after the cold lock: by top-level entry
    cache_again: int               # DREAM_CACHE total after the re-lock
    dream_uv_cache: int            # dream's uv cache after both
    lock: str                      # the lock file the cold lock wrote
    lock_same: bool                # the re-lock left it as it was
    uv_pins: list[str]


def one_round(root: Path) -> Round:
    project = make_project(root / "project")
    cache, uv_cache, store = root / "dream-cache", root / "dream-uv-cache", root / "store"
    say(f"  dream: doit lock:{IMAGE}, empty DREAM_CACHE and uv cache …")
    cold = dream_lock(project, cache, uv_cache, store)
    lock_path = project / "recipes" / f"{IMAGE}.lock.json"
    lock = lock_path.read_text()
    by_entry = {p.name: tree_bytes(p) for p in sorted(cache.iterdir())} if cache.is_dir() else {}
    say(f"    {secs(cold.seconds)}, {size(cold.rx)} received")
    say("  dream: re-lock, nothing changed …")
    again = dream_lock(project, cache, uv_cache, store)
    say(f"    {secs(again.seconds)}, {size(again.rx)} received")
    say(f"  dream: doit lock:{WHEELS_ONLY} (no Debian layer), fresh empty caches …")
    wheels_only = dream_lock(project, root / "cache-2", root / "uv-cache-2", store, WHEELS_ONLY)
    say(f"    {secs(wheels_only.seconds)}, {size(wheels_only.rx)} received")
    say("  uv pip compile, empty uv cache, then warm …")
    uv_cold = uv_compile(root / "uv", root / "uv-cache")
    uv_warm = uv_compile(root / "uv", root / "uv-cache")
    say(f"    {secs(uv_cold.seconds)}, {size(uv_cold.rx)} received; {secs(uv_warm.seconds)}, "
        f"{size(uv_warm.rx)} received")
    uv_pins = [line.split()[0] for line in (root / "uv" / "requirements.txt").read_text().splitlines()
               if "==" in line and not line.lstrip().startswith("#")]
    return Round(cold, again, wheels_only, uv_cold, uv_warm, by_entry, tree_bytes(cache), tree_bytes(uv_cache), lock,
                 lock_path.read_text() == lock, uv_pins)


def benchmark(root: Path, quick: bool, runs: int) -> list[str]:
    rounds = []
    for index in range(runs):
        say(f"round {index + 1} of {runs}")
        scratch = root / f"round-{index + 1}"
        rounds.append(one_round(scratch))
        shutil.rmtree(scratch, ignore_errors=True)
    first = rounds[0]
    lock_json = json.loads(first.lock)
    wheels = [wheel for entry in lock_json["layers"].values() for wheel in entry.get("wheels", [])]
    pins = {name: len(entry.get("wheels", entry.get("packages", []))) for name, entry in lock_json["layers"].items()}
    pinned_bytes = sum(int(w.get("size") or 0) for w in wheels)
    biggest = max(wheels, key=lambda w: int(w.get("size") or 0))

    pip: Run | None = None
    pip_bytes = 0
    notes: list[str] = []
    if not quick:
        say(f"pip download of the {len(wheels)} pinned wheels, --no-cache-dir …")
        dest = root / "pip-download"
        pip = pip_download(wheels, dest, root / "pip-tmp")
        say(f"  {secs(pip.seconds)}, {size(pip.rx)} received")
        got = {p.name: p.stat().st_size for p in dest.iterdir()}
        pip_bytes = sum(got.values())
        want = {w["filename"]: int(w["size"]) for w in wheels}
        notes.append("pip downloaded exactly the locked files (names and sizes)" if got == want else
                     f"pip's files differ from the lock's: missing {sorted(set(want) - set(got))}, "
                     f"extra {sorted(set(got) - set(want))}, "
                     f"size differs {sorted(n for n in set(got) & set(want) if got[n] != want[n])}")
        shutil.rmtree(dest, ignore_errors=True)

    cold_s = median([r.cold.seconds for r in rounds])
    cold_rx = median([r.cold.rx for r in rounds])
    again_s = median([r.again.seconds for r in rounds])
    again_rx = median([r.again.rx for r in rounds])
    wo_s = median([r.wheels_only.seconds for r in rounds])
    wo_rx = median([r.wheels_only.rx for r in rounds])
    uv_cold_s = median([r.uv_cold.seconds for r in rounds])
    uv_cold_rx = median([r.uv_cold.rx for r in rounds])
    uv_warm_s = median([r.uv_warm.seconds for r in rounds])
    uv_warm_rx = median([r.uv_warm.rx for r in rounds])
    left = max(r.cache.get("wheels", 0) + r.cache.get("debs", 0) for r in rounds)
    total = median([sum(r.cache.values()) for r in rounds])
    peer = lambda text: text if pip else "skipped"  # noqa: E731
    rows = [
        ("cold lock, wall (peer: pip download of the pinned wheels)", secs(cold_s),
         peer(pip and secs(pip.seconds)), ratio(pip.seconds if pip else None, cold_s)),
        ("cold lock, bytes received (peer: pip download)", size(round(cold_rx)),
         peer(pip and size(pip.rx)), ratio(pip.rx if pip else None, cold_rx)),
        ("cold lock, bytes left in wheels/ + debs/ (peer: files downloaded)", size(left),
         peer(size(pip_bytes)), ratio(pip_bytes if pip else None, left)),
        ("cold lock, DREAM_CACHE total (peer: files downloaded)", size(round(total)),
         peer(size(pip_bytes)), ratio(pip_bytes if pip else None, total)),
        ("cold lock, wall (peer: uv pip compile, empty uv cache)", secs(cold_s), secs(uv_cold_s),
         ratio(uv_cold_s, cold_s)),
        ("cold lock, bytes received (peer: uv pip compile, empty uv cache)", size(round(cold_rx)),
         size(round(uv_cold_rx)), ratio(uv_cold_rx, cold_rx)),
        ("cold lock of the cuda + python layers alone, wall (peer: uv, empty cache)", secs(wo_s),
         secs(uv_cold_s), ratio(uv_cold_s, wo_s)),
        ("cold lock of the cuda + python layers alone, bytes received (peer: uv)", size(round(wo_rx)),
         size(round(uv_cold_rx)), ratio(uv_cold_rx, wo_rx)),
        ("re-lock, nothing changed, wall (peer: uv pip compile, warm uv cache)", secs(again_s),
         secs(uv_warm_s), ratio(uv_warm_s, again_s)),
        ("re-lock, nothing changed, bytes received (peer: uv, warm uv cache)", size(round(again_rx)),
         size(round(uv_warm_rx)), ratio(uv_warm_rx, again_rx)),
    ]
    lines = [f"**Locking `{IMAGE}`** (`{TORCH}`, CUDA `version: python` [cudart, cublas, nvrtc], "
             f"Python {PYTHON}; dream and uv: median of {runs} rounds, pip download: one run; "
             f"ratio = peer/dream)", "",
             *table(("scenario", "dream", "peer", "ratio"), rows), ""]
    lines.append("- bytes received: /proc/net/dev receive counters of every interface but lo, before and "
                 "after each command; this counts the whole machine's traffic, not the command's alone")
    lines.append(f"- every round: dream cold lock {spread([r.cold for r in rounds], 'seconds')} / "
                 f"{spread([r.cold for r in rounds], 'rx')}; re-lock {spread([r.again for r in rounds], 'seconds')} / "
                 f"{spread([r.again for r in rounds], 'rx')}; cuda + python alone "
                 f"{spread([r.wheels_only for r in rounds], 'seconds')} / {spread([r.wheels_only for r in rounds], 'rx')}; uv cold {spread([r.uv_cold for r in rounds], 'seconds')} / "
                 f"{spread([r.uv_cold for r in rounds], 'rx')}; uv warm {spread([r.uv_warm for r in rounds], 'seconds')} / "
                 f"{spread([r.uv_warm for r in rounds], 'rx')}")
    interfaces = sorted({n for r in rounds for run in (r.cold, r.again, r.wheels_only, r.uv_cold, r.uv_warm)
                         for n in run.rx_by_interface} | set(pip.rx_by_interface if pip else ()))
    lines.append(f"- interfaces that received anything during the commands: {', '.join(interfaces) or 'none'}")
    lines.append(f"- the lock pins {', '.join(f'{name} {count}' for name, count in pins.items())}; its "
                 f"{len(wheels)} wheels are {size(pinned_bytes)} by the lock's sizes (biggest "
                 f"{biggest['filename']}, {size(int(biggest['size']))})")
    lines.append(f"- DREAM_CACHE after the cold lock (round 1): "
                 f"{', '.join(f'{k}/ {size(v)}' for k, v in first.cache.items()) or 'empty'}; "
                 f"after the re-lock {size(first.cache_again)}; dream's uv cache after both "
                 f"{size(first.dream_uv_cache)}")
    lines.append(f"- uv pip compile of {TORCH} alone pins {len(first.uv_pins)} distributions "
                 f"(the dream lock: {len(wheels)} wheels in its cuda and python layers)")
    same_lock = all(r.lock == first.lock for r in rounds)
    lines.append(f"- the re-lock left the lock file as it was: {all(r.lock_same for r in rounds)}; "
                 f"every round's cold lock wrote the same lock: {same_lock}")
    if quick:
        lines.append("- --quick: the pip download peer was skipped")
    lines.extend(f"- {note}" for note in notes)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the pip download peer (about 3.9 GB)")
    parser.add_argument("--runs", type=int, default=2, help="rounds of dream and uv (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    root = out / f"lock-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir()
    info = facts()
    say("\n".join(info) + f"\nscratch: {root}\n")
    try:
        lines = benchmark(root, args.quick, max(1, args.runs))
    finally:
        if args.keep:
            say(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say("")
    say("\n".join(f"- {fact}" for fact in info))
    say("")
    say("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
