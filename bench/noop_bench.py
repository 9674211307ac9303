"""No-op benchmark (issue 14): `doit build:gpu-image` with everything up to date, against a
cached `docker build` measured in the same run.

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
- **dream no-op, no recipe cache**: the same after deleting ``.dream/recipe-cache`` (every
  recipe read, merged and validated by cerberus, as before issue 14);
- **docker no-op**: ``DOCKER_BUILDKIT=0 docker build`` of a small Dockerfile (``FROM scratch``,
  the recipe's env, labels, workdir, user and cmd, and ``COPY`` of the same app folder) whose
  every step is cached: the docker CLI's start, the context upload and the engine's cache
  look-ups, the peer of dream's start-up and up-to-date checks. Skipped (n/a) without a Docker
  engine.

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

REPO = Path(__file__).resolve().parent.parent
IMAGE = "gpu-image"
PEER = "noop-peer:bench"
TARGET = 0.2  # issue 14: a no-op is start-up, at most this on a quiet machine

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
        context = None
        if have_docker:
            context = docker_context(root)
            setup = timed(["docker", "build", "-q", "-t", PEER, "."], context, docker_env)
            say(f"setup: first `docker build` {setup:.2f} s")
        else:
            say("docker: no Docker engine answers `docker info`; its column is n/a")
        cache_dir = project / ".dream" / "recipe-cache"
        results: dict[str, list[float]] = {name: [] for name in ("doit", "dream.tasks", "dream", "dream-cold", "docker")}
        for _ in range(args.runs):
            results["doit"].append(timed([python, "-c", "import doit"], project, env))
            results["dream.tasks"].append(timed([python, "-c", "import doit, dream.tasks"], project, env))
            results["dream"].append(timed([python, "-m", "doit", f"build:{IMAGE}"], project, env))
            shutil.rmtree(cache_dir, ignore_errors=True)
            results["dream-cold"].append(timed([python, "-m", "doit", f"build:{IMAGE}"], project, env))
            if context is not None:
                results["docker"].append(timed(["docker", "build", "-q", "-t", PEER, "."], context, docker_env))
        if not cache_dir.is_dir():
            raise SystemExit("bench: dream kept no recipe cache")
    finally:
        if have_docker:
            subprocess.run(["docker", "image", "rm", "-f", PEER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    def cell(values: list[float], pick: str) -> str:
        if not values:
            return "n/a"
        return f"{min(values) if pick == 'min' else statistics.median(values):.3f} s"

    docker = results["docker"]

    def ratio(values: list[float], pick: str) -> str:
        if not docker:
            return "n/a"
        of = (lambda v: min(v)) if pick == "min" else statistics.median
        return f"{of(docker) / of(values):.2f}"

    rows = [
        ("python -c 'import doit' (floor)", cell(results["doit"], "min"), cell(results["doit"], "median"), "", ""),
        ("python -c 'import doit, dream.tasks'", cell(results["dream.tasks"], "min"),
         cell(results["dream.tasks"], "median"), "", ""),
        (f"dream `doit build:{IMAGE}`, no-op", cell(results["dream"], "min"), cell(results["dream"], "median"),
         ratio(results["dream"], "min"), ratio(results["dream"], "median")),
        (f"dream `doit build:{IMAGE}`, no-op, no recipe cache", cell(results["dream-cold"], "min"),
         cell(results["dream-cold"], "median"), ratio(results["dream-cold"], "min"),
         ratio(results["dream-cold"], "median")),
        ("docker build (legacy builder), every step cached", cell(docker, "min"), cell(docker, "median"), "", ""),
    ]
    say("")
    say(f"**No-op build** (wall seconds, {args.runs} runs each, interleaved; docker/dream above 1: dream is faster)")
    say("")
    for line in table(("command", "min", "median", "docker/dream (min)", "docker/dream (median)"), rows):
        say(line)
    best = statistics.median(results["dream"])
    say("")
    say(f"- dream no-op median {best:.3f} s: {'within' if best <= TARGET else 'above'} the {TARGET} s target; "
        f"{statistics.median(results['dream.tasks']) - statistics.median(results['doit']):.3f} s of it is "
        f"importing dream's task wiring (median over the floor)")
    say(f"- the recipe cache saves {statistics.median(results['dream-cold']) - best:.3f} s a no-op (median)")


if __name__ == "__main__":
    main()
