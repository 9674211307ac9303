"""Build-time benchmark: dream vs `docker build` (legacy builder) vs `buildah bud`.

Run from the repository root:   python bench/build_bench.py [--runs N] [--keep]

Everything happens in a scratch directory (``bench/out/run-*``, git-ignored): two small dream
projects (the Debian base, and an app image equivalent to recipes/python-app.yaml with a few
hundred generated files), a Dockerfile equivalent to the app recipe, private dream stores and a
private buildah root. See bench/README.md for what each side does and does not do.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
APP, BASE = "bench-app", "bench-base"
BASE_TAG = f"{BASE}:1"           # the base image as Docker and buildah see it
DOCKER_TAG = f"{APP}:docker"
BUILDAH_TAG = f"localhost/{APP}:buildah"
WORDS = ("alpha beta gamma delta value result items count index total layer image store cache "
         "build return import self config path data name").split()


# --------------------------------------------------------------------------- running commands

@dataclass
class Run:
    """One timed command: wall seconds (time.perf_counter around the subprocess), output, status."""

    seconds: float
    output: str
    rc: int


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> Run:
    """Run ``cmd`` with stdout+stderr captured; timed end to end, process start-up included,
    because that start-up (Python + doit, or the docker CLI) is part of what a user waits for."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return Run(seconds, proc.stdout, proc.returncode)


# --------------------------------------------------------------------------- the scratch projects

def generate_app(app: Path, count: int, seed: int) -> int:
    """Write ``count`` text files of 1–8 KiB (same bytes every run for a given seed) in ten
    packages, plus the repository's demo main.py; returns the total bytes written."""
    rng = random.Random(seed)
    total = 0
    for index in range(count):
        target = app / f"pkg{index % 10}" / f"mod_{index:03d}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        size, lines = rng.randint(1024, 8192), []
        while sum(len(line) + 1 for line in lines) < size:
            lines.append(f"{rng.choice(WORDS)}_{rng.randrange(1000)} = "
                         + " + ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))))
        text = ("\n".join(lines) + "\n")[:size]
        target.write_text(text)
        total += len(text)
    shutil.copy2(REPO / "recipes" / "app" / "main.py", app / "main.py")
    return total + (app / "main.py").stat().st_size


def dream_project(root: Path, recipes: dict[str, dict]) -> None:
    """A dream project: dodo.py, the Debian module in layers/, and each recipe with a copy of
    the committed lock (the Debian layer's lock entry does not depend on the image's name)."""
    (root / "recipes").mkdir(parents=True)
    (root / "layers").mkdir()
    shutil.copy2(REPO / "dodo.py", root / "dodo.py")
    shutil.copy2(REPO / "dream" / "presets" / "debian-python.yaml", root / "layers" / "debian-python.yaml")
    for name, document in recipes.items():
        (root / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        shutil.copy2(REPO / "recipes" / "python-app.lock.json", root / "recipes" / f"{name}.lock.json")


def app_recipe() -> dict:
    """recipes/python-app.yaml, renamed so nothing collides with the real image."""
    document = yaml.safe_load((REPO / "recipes" / "python-app.yaml").read_text())
    document["image"].update(name=APP, tags=["bench"])
    return document


def base_recipe() -> dict:
    """Only the imported Debian layer; the label keeps its Docker image ID (= config digest)
    distinct from any image someone else loaded, so cleanup never removes theirs."""
    return {"imports": ["debian-python"],
            "image": {"name": BASE, "tags": ["1"], "labels": {"dream.bench": "base"}}}


def dockerfile(recipe: dict) -> str:
    """The app recipe as a Dockerfile on top of BASE_TAG. Metadata comes before COPY (the
    Docker-friendly order) so a file change re-runs only the COPY step."""
    image, layers = recipe["image"], recipe["layers"]
    if len(layers) != 1 or "files" not in layers[0] or any("src" not in i for i in layers[0]["files"]):
        raise SystemExit("bench: python-app.yaml no longer has exactly one files layer of `src` "
                         "items; update dockerfile() in bench/build_bench.py")
    argv = lambda v: json.dumps(shlex.split(v) if isinstance(v, str) else v)  # noqa: E731
    translate = {
        "env": lambda v: [f"ENV {k}={json.dumps(str(x))}" for k, x in v.items()],
        "labels": lambda v: [f"LABEL {json.dumps(k)}={json.dumps(str(x))}" for k, x in v.items()],
        "user": lambda v: [f"USER {v}"], "workdir": lambda v: [f"WORKDIR {v}"],
        "ports": lambda v: [f"EXPOSE {' '.join(map(str, v))}"],
        "entrypoint": lambda v: [f"ENTRYPOINT {argv(v)}"], "cmd": lambda v: [f"CMD {argv(v)}"],
        "stop_signal": lambda v: [f"STOPSIGNAL {v}"],
    }
    lines = [f"FROM {BASE_TAG}"]
    for key, value in image.items():
        if key in ("name", "tags"):
            continue
        if key not in translate:
            raise SystemExit(f"bench: no Dockerfile translation for image field {key!r}")
        lines += translate[key](value)
    for item in layers[0]["files"]:
        lines.append(f"COPY {item['src'].rstrip('/')}/ {item['dest'].rstrip('/')}/")
    return "\n".join(lines) + "\n"


def dockerignore(recipe: dict) -> str:
    """Send only the app directory as the build context, minus the recipe's excludes."""
    lines = ["*"]
    for item in recipe["layers"][0]["files"]:
        src = item["src"].rstrip("/")
        lines.append(f"!{src}")
        lines += [f"{src}/**/{pattern}" for pattern in item.get("exclude", [])]
    return "\n".join(lines) + "\n"


@dataclass
class Scratch:
    """Where everything lives; one directory, removed at the end unless --keep."""

    root: Path
    app_bytes: int = 0

    @property
    def app_project(self) -> Path: return self.root / "app"
    @property
    def base_project(self) -> Path: return self.root / "base"
    @property
    def context(self) -> Path: return self.app_project / "recipes"   # holds app/
    @property
    def buildah_root(self) -> Path: return self.root / "bh"


def make_scratch(root: Path, files: int, seed: int) -> Scratch:
    scratch = Scratch(root)
    recipe = app_recipe()
    dream_project(scratch.app_project, {APP: recipe})
    dream_project(scratch.base_project, {BASE: base_recipe()})
    src = recipe["layers"][0]["files"][0]["src"]
    scratch.app_bytes = generate_app(scratch.context / src, files, seed)
    (scratch.app_project / "Dockerfile").write_text(dockerfile(recipe))
    (scratch.context / ".dockerignore").write_text(dockerignore(recipe))
    return scratch


# --------------------------------------------------------------------------- the three tools

@dataclass
class Outcome:
    """What one build reported besides its time."""

    seconds: float
    detail: str = ""
    blobs: dict[str, int] = field(default_factory=dict)


class Dream:
    """`doit build:bench-app` in the app project, with a private DREAM_STORE. DREAM_CACHE keeps
    its default so the .debs already downloaded are reused (no network is needed)."""

    def __init__(self, scratch: Scratch, store: Path) -> None:
        self.scratch, self.store = scratch, store
        self.env = {**os.environ, "DREAM_STORE": str(store)}

    def doit(self, project: Path, *tasks: str) -> Run:
        return run([sys.executable, "-m", "doit", *tasks], cwd=project, env=self.env)

    def forget(self, project: Path) -> None:
        """Remove doit's database, so a cold build is also cold for doit."""
        shutil.rmtree(project / ".dream", ignore_errors=True)

    def build(self) -> Outcome:
        result = self.doit(self.scratch.app_project, f"build:{APP}")
        ran = re.findall(r"^\.  layer:\S+/(\S+)", result.output, re.M)
        fresh = re.findall(r"^-- layer:\S+/(\S+)", result.output, re.M)
        blobs = {m[0]: int(m[1].replace(",", ""))
                 for m in re.findall(rf"^{APP}/(\S+): sha256:\w+ \(([\d,]+) bytes\)", result.output, re.M)}
        detail = f"ran [{', '.join(ran)}] up-to-date [{', '.join(fresh)}]"
        return Outcome(result.seconds, detail, blobs)

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.store.rglob("*") if p.is_file() and "tmp" not in p.parts)


def steps_cached(output: str) -> str:
    """How many Dockerfile steps after FROM (which is never "cached") a builder reused."""
    steps = len(re.findall(r"^(?:STEP|Step) \d+/\d+ ?: (?!FROM)", output, re.M))
    cached = len(re.findall(r"Using cache", output))
    return f"{cached}/{steps} steps after FROM cached"


class Docker:
    """`docker build` with the legacy builder (DOCKER_BUILDKIT=0), tracking every image it
    makes so cleanup removes exactly those."""

    def __init__(self, scratch: Scratch) -> None:
        self.scratch = scratch
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        self.made: list[str] = []

    def build(self, no_cache: bool = False) -> Outcome:
        cmd = ["docker", "build", "--network", "none", "-t", DOCKER_TAG,
               "-f", str(self.scratch.app_project / "Dockerfile"), str(self.scratch.context)]
        result = run(cmd[:2] + (["--no-cache"] if no_cache else []) + cmd[2:], env=self.env)
        built = re.findall(r"Successfully built (\w+)", result.output)
        self.made += built
        return Outcome(result.seconds, steps_cached(result.output))

    def cleanup(self) -> list[str]:
        """Untag ours, then remove the images our builds made, newest first (their untagged
        intermediate parents go with them); returns what could not be removed."""
        problems = []
        for ref in [DOCKER_TAG, *reversed(self.made), BASE_TAG]:
            result = run(["docker", "rmi", ref], env=self.env, check=False)
            if result.rc != 0 and "No such image" not in result.output:
                problems.append(f"docker rmi {ref}: {result.output.strip()[:200]}")
        return problems


class Buildah:
    """`buildah bud` with a private root on the vfs driver and chroot isolation (works inside
    this container without privileges); the base is pulled from dream's OCI store."""

    def __init__(self, scratch: Scratch) -> None:
        root = scratch.buildah_root
        self.scratch = scratch
        self.base = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "runroot"),
                     "--storage-driver", "vfs"]

    def pull_base(self, store: Path) -> tuple[Run, str]:
        """Copy the base image from the dream store (``oci:STORE:bench-base``) and tag it.

        buildah names an image pulled from an OCI layout after the layout's *path*, which fails
        when the path is not a valid reference (upper case, a trailing ``_``, ...); then the
        copy that dream loaded into Docker is pulled instead."""
        source = f"oci:{store}:{BASE}"
        pulled = run(self.base + ["pull", "--quiet", source], check=False)
        if pulled.rc != 0:
            source = f"docker-daemon:{BASE_TAG}"
            pulled = run(self.base + ["pull", "--quiet", source])
        image_id = pulled.output.strip().splitlines()[-1]
        run(self.base + ["tag", image_id, f"localhost/{BASE_TAG}"])
        return pulled, source

    def build(self, no_cache: bool = False) -> Outcome:
        cmd = self.base + ["bud", "--isolation", "chroot", "--network", "host", "--layers",
                           *(["--no-cache"] if no_cache else []), "-t", BUILDAH_TAG,
                           "-f", str(self.scratch.app_project / "Dockerfile"), str(self.scratch.context)]
        result = run(cmd)
        return Outcome(result.seconds, steps_cached(result.output))

    def cleanup(self) -> None:
        run(self.base + ["rmi", "--all", "--force"], check=False)
        shutil.rmtree(self.scratch.buildah_root, ignore_errors=True)


# --------------------------------------------------------------------------- scenarios

TOOLS = ("dream", "docker", "buildah")


@dataclass
class Row:
    scenario: str
    times: dict[str, float | None] = field(default_factory=dict)   # None: not applicable / failed


def attempt(results: dict[str, list[float]], tool: str, build, notes: list[str], label: str,
            failed: set[str]) -> Outcome | None:
    """Run one build, record its time; a failing peer is reported and dropped, not fatal."""
    if tool in failed:
        return None
    try:
        outcome = build()
    except Exception as exc:  # noqa: BLE001 - the benchmark must go on without that tool
        failed.add(tool)
        notes.append(f"{tool} failed in '{label}', left out from then on: {exc}")
        return None
    results.setdefault(tool, []).append(outcome.seconds)
    print(f"  {label:<22} {tool:<8} {outcome.seconds:7.2f} s  {outcome.detail}", flush=True)
    return outcome


def median_row(name: str, results: dict[str, list[float]]) -> Row:
    return Row(name, {tool: statistics.median(results[tool]) if results.get(tool) else None
                      for tool in TOOLS})


def edit_one_file(scratch: Scratch, iteration: int) -> Path:
    """Change one app file by appending a line (content changes, size changes a little)."""
    target = scratch.context / "app" / "pkg3" / "mod_003.py"
    with open(target, "a") as handle:
        handle.write(f"edited_{iteration} = {iteration}\n")
    return target


def benchmark(scratch: Scratch, runs: int, use_buildah: bool) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    failed: set[str] = set() if use_buildah else {"buildah"}
    rows: list[Row] = []
    docker, buildah = Docker(scratch), Buildah(scratch)
    try:
        # (a0) dream alone: everything from an empty store, Debian layer included.
        full = Dream(scratch, scratch.root / "store-full")
        res: dict[str, list[float]] = {}
        out = attempt(res, "dream", full.build, notes, "cold, full image", set())
        if out:
            notes.append(f"dream full cold build: {out.detail}; blobs {out.blobs}")
        rows.append(median_row("cold, full image (dream only)", res))
        shutil.rmtree(full.store)
        full.forget(scratch.app_project)

        # The base for everyone: built by dream into the shared store, loaded into Docker,
        # pulled by buildah. Not timed as part of any scenario.
        dream = Dream(scratch, scratch.root / "store")
        setup = dream.doit(scratch.base_project, f"build:{BASE}", f"load:{BASE}")
        notes.append(f"setup (untimed in the table): dream build+load of {BASE_TAG} "
                     f"took {setup.seconds:.1f} s")
        if "buildah" not in failed:
            try:
                pulled, source = buildah.pull_base(dream.store)
                notes.append(f"setup: buildah pull {source.replace(str(dream.store), '<store>')} "
                             f"took {pulled.seconds:.1f} s")
            except Exception as exc:  # noqa: BLE001
                failed.add("buildah")
                notes.append(f"buildah left out: pulling the base failed: {exc}")

        floor = [dream.doit(scratch.app_project, "list").seconds for _ in range(3)]
        notes.append(f"dream start-up floor (`doit list`: Python, doit, recipe loading, no "
                     f"hashing): median {statistics.median(floor):.2f} s")

        builds = {"dream": lambda: dream.build(), "docker": lambda: docker.build(),
                  "buildah": lambda: buildah.build()}
        cold = {"dream": lambda: dream.build(), "docker": lambda: docker.build(no_cache=True),
                "buildah": lambda: buildah.build(no_cache=True)}

        # (a) cold app layer: base present, app layer never built (docker/buildah --no-cache).
        res = {}
        for tool in TOOLS:
            attempt(res, tool, cold[tool], notes, "cold, app layer", failed)
        rows.append(median_row("cold, app layer", res))

        # (b) no-op rebuilds.
        res = {}
        for _ in range(runs):
            for tool in TOOLS:
                attempt(res, tool, builds[tool], notes, "no-op", failed)
        rows.append(median_row(f"no-op (median of {runs})", res))

        # (c) one file changed in the app layer, then each tool rebuilds.
        res = {}
        growth, blob = [], None
        for iteration in range(runs):
            edit_one_file(scratch, iteration)
            before = dream.store_bytes()
            for tool in TOOLS:
                out = attempt(res, tool, builds[tool], notes, "one-file change", failed)
                if tool == "dream" and out:
                    growth.append(dream.store_bytes() - before)
                    blob = out.blobs.get("app", blob)
        rows.append(median_row(f"one-file change (median of {runs})", res))
        if blob is not None:
            notes.append(f"dream app layer blob after (c): {blob:,} bytes gzip "
                         f"(app tree: {scratch.app_bytes:,} bytes of file content); "
                         f"store growth per change: {', '.join(f'{g:,}' for g in growth)} bytes")
        return rows, notes
    finally:
        for problem in docker.cleanup():
            notes.append(problem)
        buildah.cleanup()


# --------------------------------------------------------------------------- report

def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def print_table(rows: list[Row]) -> None:
    head = ("scenario", "dream s", "docker s", "buildah s", "docker/dream", "buildah/dream")
    body = [(r.scenario, *(f"{r.times[t]:.2f}" if r.times.get(t) is not None else "n/a" for t in TOOLS),
             ratio(r.times.get("docker"), r.times.get("dream")),
             ratio(r.times.get("buildah"), r.times.get("dream"))) for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    fmt = lambda line: " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
    print(fmt(head))
    print("-+-".join("-" * w for w in widths))
    for line in body:
        print(fmt(line))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2,
                        help="repetitions of the no-op and the one-file-change rebuilds (median)")
    parser.add_argument("--files", type=int, default=300, help="generated app files (1-8 KiB each)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the generated files")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    if shutil.which("docker") is None or run(["docker", "info"], check=False).rc != 0:
        raise SystemExit("bench: the Docker engine is not reachable")
    use_buildah = shutil.which("buildah") is not None
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    # Lower case, digits and dashes only: buildah turns the store's path into an image name.
    root = out / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir()
    scratch = make_scratch(root, args.files, args.seed)
    cache = os.environ.get("DREAM_CACHE") or "~/.cache/dream (default)"
    print(f"scratch: {scratch.root}\nDREAM_CACHE: {cache}: .debs already there are reused, "
          f"so 'cold' means an empty store, not an empty download cache\n"
          f"app: {args.files} files + main.py, {scratch.app_bytes:,} bytes\n", flush=True)
    try:
        rows, notes = benchmark(scratch, args.runs, use_buildah)
    finally:
        if args.keep:
            print(f"\nkept {scratch.root}")
        else:
            shutil.rmtree(scratch.root, ignore_errors=True)
    if not use_buildah:
        notes.append("buildah is not on PATH: left out")
    print()
    print_table(rows)
    print()
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
