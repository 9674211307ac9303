"""Lock benchmark: `doit lock` of a real PyTorch app against downloading its wheels, and against
a bare resolution.

Run from the repository root:   python bench/lock_bench.py [--quick] [--keep]

Why: a dream lock pins every wheel by file name, size and sha256 and reads each wheel's member
list by HTTP range reads of the zip's central directory; it downloads no wheel (issue 11). What a
lock had to do before is download every wheel it pinned; the least any lock can do is resolve.
All three are measured in one run, on this machine, for the same app:

- **dream**: a scratch project as ``tests/conftest.py``'s ``make_project`` makes it (dodo.py, the
  shipped presets as ``layers/``) with ``recipes/torch-app.yaml``: ``imports: [debian-python,
  cuda-12]``, Python 3.11, a ``cuda`` layer ``{version: python, components: [cudart, cublas,
  nvrtc]}`` and a ``python`` layer ``{requirements: [torch==2.8.0]}``. ``doit lock:torch-app``
  with an empty ``DREAM_CACHE`` and an empty uv cache (``UV_CACHE_DIR``), both fresh directories,
  then again with nothing changed (same caches, the lock on disk).
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
RECIPE = f"""# A PyTorch app: Debian 12 + Python 3.11, CUDA from torch's own pins, torch.
imports: [debian-python, cuda-12]
image:
  name: {IMAGE}
  tags: [latest]
python:
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


def layer_times(run: Run) -> str:
    """When each of the lock's per-layer report lines (``…lock.json: debian: locked (…)``) came out."""
    return "; ".join(f"{line.split(': ', 1)[1]} at {at:.1f} s" for at, line in run.stamps
                     if line.startswith(f"{IMAGE}.lock.json: ")) or "no per-layer lines"


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
    return root


def dream_lock(project: Path, cache: Path, uv_cache: Path, store: Path) -> Run:
    env = {**os.environ, "DREAM_CACHE": str(cache), "UV_CACHE_DIR": str(uv_cache),
           "DREAM_STORE": str(store)}
    return measured([sys.executable, "-m", "doit", f"lock:{IMAGE}"], cwd=project, env=env)


def locked_wheels(lock_path: Path) -> list[dict]:
    """Every wheel of every layer of the lock (the Debian layer has none), in layer order."""
    lock = json.loads(lock_path.read_text())
    return [wheel for entry in lock["layers"].values() for wheel in entry.get("wheels", [])]


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


def benchmark(root: Path, quick: bool) -> list[str]:
    project = make_project(root / "project")
    cache, uv_cache, store = root / "dream-cache", root / "dream-uv-cache", root / "store"
    say(f"dream: doit lock:{IMAGE}, empty DREAM_CACHE and uv cache …")
    cold = dream_lock(project, cache, uv_cache, store)
    lock_path = project / "recipes" / f"{IMAGE}.lock.json"
    lock_text = lock_path.read_text()
    cache_after_cold = {"wheels": tree_bytes(cache / "wheels"), "debs": tree_bytes(cache / "debs"),
                        "total": tree_bytes(cache)}
    kinds = [f"{p.name}/ {size(tree_bytes(p))}" for p in sorted(cache.iterdir())] if cache.is_dir() else []
    say(f"  {secs(cold.seconds)}, {size(cold.rx)} received")
    say("dream: re-lock, nothing changed …")
    again = dream_lock(project, cache, uv_cache, store)
    say(f"  {secs(again.seconds)}, {size(again.rx)} received")
    cache_after_again = tree_bytes(cache)
    lock_same = lock_path.read_text() == lock_text

    wheels = locked_wheels(lock_path)
    pythons = {entry.get("python") for entry in json.loads(lock_text)["layers"].values()} - {None}
    pinned_bytes = sum(int(w.get("size") or 0) for w in wheels)
    biggest = max(wheels, key=lambda w: int(w.get("size") or 0))

    say("uv pip compile, empty uv cache …")
    uv_cold = uv_compile(root / "uv", root / "uv-cache")
    say(f"  {secs(uv_cold.seconds)}, {size(uv_cold.rx)} received")
    say("uv pip compile, warm uv cache …")
    uv_warm = uv_compile(root / "uv", root / "uv-cache")
    say(f"  {secs(uv_warm.seconds)}, {size(uv_warm.rx)} received")
    uv_pins = [line.split()[0] for line in (root / "uv" / "requirements.txt").read_text().splitlines()
               if "==" in line and not line.startswith("#")]

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

    rows = [
        ("cold lock, wall (peer: pip download of the pinned wheels)", secs(cold.seconds),
         secs(pip.seconds) if pip else "skipped", ratio(pip.seconds if pip else None, cold.seconds)),
        ("cold lock, bytes received (peer: pip download)", size(cold.rx),
         size(pip.rx) if pip else "skipped", ratio(pip.rx if pip else None, cold.rx)),
        ("cold lock, wheels/ + debs/ left in the cache (peer: files downloaded)",
         size(cache_after_cold["wheels"] + cache_after_cold["debs"]),
         size(pip_bytes) if pip else "skipped",
         ratio(pip_bytes if pip else None, cache_after_cold["wheels"] + cache_after_cold["debs"])),
        ("cold lock, DREAM_CACHE total (peer: files downloaded)", size(cache_after_cold["total"]),
         size(pip_bytes) if pip else "skipped", ratio(pip_bytes if pip else None, cache_after_cold["total"])),
        ("cold lock, wall (peer: uv pip compile, empty uv cache)", secs(cold.seconds), secs(uv_cold.seconds),
         ratio(uv_cold.seconds, cold.seconds)),
        ("cold lock, bytes received (peer: uv pip compile, empty uv cache)", size(cold.rx), size(uv_cold.rx),
         ratio(uv_cold.rx, cold.rx)),
        ("re-lock, nothing changed, wall (peer: uv pip compile, warm uv cache)", secs(again.seconds),
         secs(uv_warm.seconds), ratio(uv_warm.seconds, again.seconds)),
        ("re-lock, nothing changed, bytes received (peer: uv, warm cache)", size(again.rx), size(uv_warm.rx),
         ratio(uv_warm.rx, again.rx)),
    ]
    lines = [f"**Locking `{IMAGE}`** (`{TORCH}`, CUDA `version: python` [cudart, cublas, nvrtc], "
             f"Python {PYTHON}; ratio = peer/dream)", "",
             *table(("scenario", "dream", "peer", "ratio"), rows), ""]
    lines.append(f"- bytes received are /proc/net/dev receive counters, all interfaces but lo, "
                 f"before/after each command: the whole machine's traffic, not the command's alone")
    for label, result in (("dream cold lock", cold), ("dream re-lock", again), ("uv cold", uv_cold),
                          ("uv warm", uv_warm), *((("pip download", pip),) if pip else ())):
        lines.append(f"- {label}: received by interface {result.rx_by_interface or '{}'}")
    lines.append(f"- the lock pins {len(wheels)} wheels, {size(pinned_bytes)} by the lock's sizes "
                 f"(biggest {biggest['filename']}, {size(int(biggest['size']))}); the lock's "
                 f"Python: {', '.join(sorted(pythons)) or '?'}")
    lines.append(f"- uv pip compile of {TORCH} alone pins {len(uv_pins)} distributions "
                 f"(uv cache after it: {size(tree_bytes(root / 'uv-cache'))})")
    lines.append(f"- dream cold lock, per-layer lines: {layer_times(cold)}; done at {cold.seconds:.1f} s")
    lines.append(f"- dream re-lock, per-layer lines: {layer_times(again)}; done at {again.seconds:.1f} s")
    lines.append(f"- DREAM_CACHE after the cold lock: {', '.join(kinds) or 'nothing'}; "
                 f"wheels/ {size(cache_after_cold['wheels'])}, debs/ {size(cache_after_cold['debs'])}, "
                 f"total {size(cache_after_cold['total'])}; after the re-lock {size(cache_after_again)}; "
                 f"dream's uv cache after both: {size(tree_bytes(uv_cache))}")
    lines.append(f"- the re-lock {'left the lock file byte for byte as it was' if lock_same else 'CHANGED the lock file'}")
    if quick:
        lines.append("- --quick: the pip download peer was skipped")
    lines.extend(f"- {note}" for note in notes)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the pip download peer (about 3.9 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    root = out / f"lock-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir()
    info = facts()
    say("\n".join(info) + f"\nscratch: {root}\n")
    try:
        lines = benchmark(root, args.quick)
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
