"""No-op and one-file-change benchmark (issue 14): `doit build:gpu-image` with everything up to
date, and after a line appended to the app's one file, against a cached `docker build` and the
same change measured in the same run.

Run from the repository root:   python bench/noop_bench.py [--runs 9] [--keep]

The dream side is a scratch project (``bench/out/noop-*``, git-ignored) holding only
recipes/gpu-image.yaml, its lock and recipes/gpu-app/, as tests/conftest.py's
``make_project(with_gpu=True)`` lays it out, built into the repository's store
(``DREAM_STORE``, default ``.dream/store``): when the store already holds the image (after a
``doit build:gpu-image`` in the repository) the first build is a no-op too; otherwise it builds
the image once (a few minutes with warm download caches; setup, not in the table). Timed, each
``--runs`` times, interleaved so every command sees the same machine:

- **floor**: ``python -c 'import doit'`` and ``python -c 'import doit, dream.tasks'`` (what
  starting Python, doit and importing dream's task wiring cost before any recipe is read);
- **dream no-op**: ``python -m doit build:gpu-image`` again (recipes from
  ``.dream/recipe-cache``, every layer task up to date);
- **dream no-op, bytecode cached**: the same with ``PYTHONPYCACHEPREFIX`` set to a folder of the
  scratch directory and ``PYTHONDONTWRITEBYTECODE`` removed, so dream's modules are read from
  bytecode, as after a ``pip install`` (which compiles them) or in any shell that lets Python
  write its caches. A shell with ``PYTHONDONTWRITEBYTECODE=1`` (the output says whether this
  one has it) and an editable install compiles dream's source in every command: the plain row;
- **dream no-op, no recipe cache**: the same after deleting ``.dream/recipe-cache`` (every
  recipe read, merged and validated by cerberus, as before issue 14);
- **dream one-file change**: a line appended to ``recipes/gpu-app/main.py``, then ``python -m
  doit build:gpu-image`` (it must run only ``layer:gpu-image/app`` and the image), plain and
  with bytecode cached;
- **docker no-op**: ``DOCKER_BUILDKIT=0 docker build`` of a small Dockerfile (``FROM scratch``,
  the recipe's env, labels, workdir, user and cmd, and ``COPY`` of the same app folder) whose
  every step is cached: the docker CLI's start, the context upload and the engine's cache
  look-ups, the peer of dream's start-up and up-to-date checks; **docker one-file change**: the
  same line appended to the context's copy of the file, then the same build (the ``COPY`` and
  the steps after it run again). Skipped (n/a) without a Docker engine.

At the end the app file is restored and built once more, so that the store's ``gpu-image`` tag
names the image it named before.

Wall seconds, ``time.perf_counter`` around each subprocess, process start-up included; min and
median of the runs; ``docker/dream`` above 1 means dream is faster. One machine, one image: the
ratio says where the time goes, not more.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
IMAGE = "gpu-image"
PEER = "noop-peer:bench"
TARGET = 0.2  # issue 14: a no-op is start-up, at most this on a quiet machine
CHANGE_TARGET = 0.3  # issue 14: a one-file app change
APP_FILE = Path("recipes") / "gpu-app" / "main.py"

DOCKERFILE = """\
FROM scratch
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
ENV PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title=gpu-image
WORKDIR /app
COPY app/ /app/
USER 1000:1000
CMD ["python3", "/app/main.py"]
"""


def say(text: str) -> None:
    print(text, flush=True)


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Seconds ``cmd`` took end to end; its output is kept only when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return seconds


def output(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc.stdout


def dream_project(root: Path) -> Path:
    """The scratch project: dodo.py, the GPU recipe, its lock and its app."""
    project = root / "dream"
    (project / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", project / "dodo.py")
    for name in (f"{IMAGE}.yaml", f"{IMAGE}.lock.json"):
        shutil.copy(REPO / "recipes" / name, project / "recipes" / name)
    shutil.copytree(REPO / "recipes" / "gpu-app", project / "recipes" / "gpu-app")
    return project


def docker_context(root: Path) -> Path:
    context = root / "docker"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / ".dockerignore").write_text("*\n!app\n")
    shutil.copytree(REPO / "recipes" / "gpu-app", context / "app")
    return context


def docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each command (default 9)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    python = sys.executable
    root = REPO / "bench" / "out" / f"noop-{os.getpid()}"
    root.mkdir(parents=True)
    store = Path(os.environ.get("DREAM_STORE") or REPO / ".dream" / "store").absolute()
    env = {**os.environ, "DREAM_STORE": str(store)}
    docker_env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    have_docker = docker_works()
    restore: Callable[[], None] | None = None
    try:
        project = dream_project(root)
        say(f"machine: nproc {os.cpu_count()}, Python {sys.version.split()[0]} ({python})")
        say(f"scratch: {root}\nstore: {store}")
        setup = timed([python, "-m", "doit", f"build:{IMAGE}"], project, env)
        say(f"setup: first `doit build:{IMAGE}` {setup:.2f} s (builds the image unless the store holds it)")
        check = output([python, "-m", "doit", f"build:{IMAGE}"], project, env)
        ran = [line for line in check.splitlines() if line.startswith(".  ")]
        if ran:
            raise SystemExit(f"bench: the second build was no no-op, it ran: {', '.join(ran)}")
        cached_env = {**env, "PYTHONPYCACHEPREFIX": str(root / "pycache")}
        cached_env.pop("PYTHONDONTWRITEBYTECODE", None)
        output([python, "-m", "doit", f"build:{IMAGE}"], project, cached_env)  # writes the bytecode
        say(f"PYTHONDONTWRITEBYTECODE is {'set' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'not set'} "
            "in this shell (set: the plain rows compile dream's source in every command)")
        app = project / APP_FILE
        original = app.read_bytes()

        def restore_app() -> None:
            app.write_bytes(original)
            subprocess.run([python, "-m", "doit", f"build:{IMAGE}"], cwd=project, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        restore = restore_app
        context = None
        if have_docker:
            context = docker_context(root)
            setup = timed(["docker", "build", "-q", "-t", PEER, "."], context, docker_env)
            say(f"setup: first `docker build` {setup:.2f} s")
        else:
            say("docker: no Docker engine answers `docker info`; its column is n/a")
        cache_dir = project / ".dream" / "recipe-cache"
        names = ("doit", "dream.tasks", "dream", "dream-pyc", "dream-cold", "change", "change-pyc",
                 "docker", "docker-change")
        results: dict[str, list[float]] = {name: [] for name in names}
        build = [python, "-m", "doit", f"build:{IMAGE}"]
        edits = 0

        def change(run_env: dict[str, str]) -> float:
            nonlocal edits
            edits += 1
            with open(app, "a") as handle:  # a line no earlier run wrote: the store has no layer of it
                handle.write(f"# change {os.getpid()}-{edits}\n")
            start = time.perf_counter()
            out = output(build, project, run_env)
            seconds = time.perf_counter() - start
            ran = [line[3:] for line in out.splitlines() if line.startswith(".  ")]
            if ran != [f"layer:{IMAGE}/app", f"build:{IMAGE}"]:
                raise SystemExit(f"bench: the one-file change ran {', '.join(ran)}")
            return seconds

        for _ in range(args.runs):
            results["doit"].append(timed([python, "-c", "import doit"], project, env))
            results["dream.tasks"].append(timed([python, "-c", "import doit, dream.tasks"], project, env))
            results["dream"].append(timed(build, project, env))
            results["dream-pyc"].append(timed(build, project, cached_env))
            shutil.rmtree(cache_dir, ignore_errors=True)
            results["dream-cold"].append(timed(build, project, env))
            results["change"].append(change(env))
            results["change-pyc"].append(change(cached_env))
            if context is not None:
                results["docker"].append(timed(["docker", "build", "-q", "-t", PEER, "."], context, docker_env))
                with open(context / "app" / "main.py", "a") as handle:
                    handle.write(f"# change {os.getpid()}-{edits}\n")
                results["docker-change"].append(timed(["docker", "build", "-q", "-t", PEER, "."], context, docker_env))
        if not cache_dir.is_dir():
            raise SystemExit("bench: dream kept no recipe cache")
    finally:
        if restore is not None:  # the store's tag names the image it named before
            restore()
        if have_docker:
            subprocess.run(["docker", "image", "rm", "-f", PEER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    def cell(values: list[float], pick: str) -> str:
        if not values:
            return "n/a"
        return f"{min(values) if pick == 'min' else statistics.median(values):.3f} s"

    def ratio(values: list[float], pick: str, peer: str = "docker") -> str:
        if not results[peer]:
            return "n/a"
        of = (lambda v: min(v)) if pick == "min" else statistics.median
        return f"{of(results[peer]) / of(values):.2f}"

    def row(label: str, name: str, peer: str = "") -> tuple[str, ...]:
        values = results[name]
        ratios = (ratio(values, "min", peer), ratio(values, "median", peer)) if peer else ("", "")
        return (label, cell(values, "min"), cell(values, "median"), *ratios)

    rows = [
        row("python -c 'import doit' (floor)", "doit"),
        row("python -c 'import doit, dream.tasks'", "dream.tasks"),
        row(f"dream `doit build:{IMAGE}`, no-op", "dream", "docker"),
        row(f"dream `doit build:{IMAGE}`, no-op, bytecode cached", "dream-pyc", "docker"),
        row(f"dream `doit build:{IMAGE}`, no-op, no recipe cache", "dream-cold", "docker"),
        row("docker build (legacy builder), every step cached", "docker"),
        row(f"dream one-file app change, `doit build:{IMAGE}`", "change", "docker-change"),
        row("dream one-file app change, bytecode cached", "change-pyc", "docker-change"),
        row("docker build after the same change", "docker-change"),
    ]
    say("")
    say(f"**No-op build and one-file change** (wall seconds, {args.runs} runs each, interleaved; "
        "docker/dream above 1: dream is faster)")
    say("")
    for line in table(("command", "min", "median", "docker/dream (min)", "docker/dream (median)"), rows):
        say(line)
    say("")
    for name, what, target in (("dream", "no-op", TARGET), ("dream-pyc", "no-op, bytecode cached", TARGET),
                               ("change", "one-file change", CHANGE_TARGET),
                               ("change-pyc", "one-file change, bytecode cached", CHANGE_TARGET)):
        median = statistics.median(results[name])
        say(f"- dream {what}: median {median:.3f} s, {'within' if median <= target else 'above'} the {target} s target")
    best = statistics.median(results["dream"])
    say(f"- {statistics.median(results['dream.tasks']) - statistics.median(results['doit']):.3f} s of the no-op "
        "is importing dream's task wiring (median over the floor)")
    say(f"- the recipe cache saves {statistics.median(results['dream-cold']) - best:.3f} s a no-op (median)")


if __name__ == "__main__":
    main()
