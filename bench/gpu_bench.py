"""GPU-image benchmark: dream vs `docker build` (legacy builder) on the reference CUDA image.

Run from the repository root:   python bench/gpu_bench.py [--quick] [--keep]

The workload is recipes/gpu-image.yaml with its lock (Debian + Python 3.11, CUDA 12.9 wheels,
numpy, CuPy, user `dev`, a small app) and its peer, the Dockerfile of
shared/research/peer-baseline.md on top of a Debian base that dream builds and loads. Measured in
one run, on this machine:

1. cold build: dream with warm download caches, with empty ones (``--quick`` skips this), and
   with only the Debian layer already built; docker with ``--no-cache``;
2. adding ``rich==15.0.0``: dream's lock and build, docker's cached rebuild;
3. the bytes that change with (2): layers whose digest changed, compressed and uncompressed;
4. the biggest layer (cuBLAS): dream's throughput against ISA-L gzip-1 and sha256 on the same
   bytes.

Everything happens in ``bench/out/gpu-*`` (git-ignored), removed at the end with the Docker
images the run made (``--keep`` keeps the directory). See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGE = "gpu-image"
BASE = "bench-base"
BASE_TAG = f"{BASE}:latest"
PEER = "gpu-peer"
RICH = "rich==15.0.0"
BIG_LAYER = f"{IMAGE}/cuda-cublas"
MB = 1e6


# --------------------------------------------------------------------------- running commands

@dataclass
class Run:
    """One timed command: wall seconds (time.perf_counter around the subprocess), output, status,
    and for each output line the seconds since the start at which it arrived."""

    seconds: float
    output: str
    rc: int
    stamps: list[tuple[float, str]] = field(default_factory=list)


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> Run:
    """Run ``cmd``, stdout+stderr merged and read line by line (so docker's steps can be timed);
    timed end to end, process start-up included (part of what a user waits for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    assert proc.stdout is not None
    stamps = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    rc = proc.wait()
    seconds = time.perf_counter() - start
    output = "\n".join(line for _, line in stamps)
    if check and rc != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {rc}):\n{output[-3000:]}")
    return Run(seconds, output, rc, stamps)


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- dream side

class Project:
    """A dream project in the scratch directory, run with its own DREAM_STORE (and DREAM_CACHE
    when given; otherwise the default ~/.cache/dream, whose .debs and wheels are reused)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def doit(self, store: Path, *tasks: str, cache: Path | None = None) -> Run:
        env = {**os.environ, "DREAM_STORE": str(store)}
        if cache is not None:
            env["DREAM_CACHE"] = str(cache)
        return run([sys.executable, "-m", "doit", *tasks], cwd=self.root, env=env)

    def forget(self) -> None:
        """Remove doit's database, so a cold build is also cold for doit."""
        shutil.rmtree(self.root / ".dream", ignore_errors=True)


def gpu_project(root: Path) -> Project:
    """dodo.py, layers/, the reference recipe, its lock and its app (as tests/conftest.py's
    make_project(with_gpu=True) does)."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(REPO / "dream" / "presets", root / "layers")
    (root / "recipes").mkdir()
    for name in (f"{IMAGE}.yaml", f"{IMAGE}.lock.json"):
        shutil.copy2(REPO / "recipes" / name, root / "recipes" / name)
    shutil.copytree(REPO / "recipes" / "gpu-app", root / "recipes" / "gpu-app")
    return Project(root)


def base_project(root: Path) -> Project:
    """The Docker peer's base: the Debian layer of debian-python plus python3-venv (a layer of
    the same name merges), built, locked and loaded by dream. The label keeps its image ID (the
    config digest) distinct from any image someone else loaded, so cleanup removes only ours."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(REPO / "dream" / "presets", root / "layers")
    (root / "recipes").mkdir()
    recipe = {"imports": ["debian-python"],
              "image": {"name": BASE, "tags": ["latest"], "labels": {"dream.bench": "gpu-base"}},
              "layers": [{"name": "debian", "debian": {"packages": ["python3-venv"]}}]}
    (root / "recipes" / f"{BASE}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Project(root)


def add_rich(project: Project) -> None:
    recipe = project.root / "recipes" / f"{IMAGE}.yaml"
    text = recipe.read_text()
    old = "requirements: [numpy, cupy-cuda12x]"
    if old not in text:
        raise SystemExit(f"bench: {recipe.name} no longer says `{old}`; update add_rich()")
    recipe.write_text(text.replace(old, f"requirements: [numpy, cupy-cuda12x, {RICH}]"))


def ran_layers(result: Run) -> list[str]:
    return re.findall(r"^\.  layer:\S+?/(\S+)", result.output, re.M)


@dataclass
class Layer:
    name: str
    media_type: str
    digest: str
    size: int                 # compressed (the blob)
    tar: int = 0              # uncompressed tar stream
    files: int = 0            # bytes of regular-file content (what Docker's Size counts)


def image_layers(store_root: Path, name: str = IMAGE) -> list[Layer]:
    """The layers of image ``name`` in a store: index.json → tag → manifest → layers, named
    after the config's history (``dream layer NAME``)."""
    from dream.store import Store
    store = Store(store_root)
    tagged = store.tagged(name)
    if tagged is None:
        raise RuntimeError(f"{name} is not tagged in {store_root}")
    manifest = store.read_json(tagged.digest)
    history = store.read_json(manifest["config"]["digest"])["history"]
    names = [h["created_by"].removeprefix("dream layer ") for h in history if not h.get("empty_layer")]
    return [Layer(n, layer["mediaType"], layer["digest"], layer["size"])
            for n, layer in zip(names, manifest["layers"])]


class Counter:
    """A read-only stream wrapper that counts the bytes read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def measure_uncompressed(store_root: Path, layers: list[Layer]) -> None:
    """Fill in each layer's tar-stream bytes and file-content bytes by decompressing its blob."""
    from dream.oci.read import open_layer
    from dream.store import Descriptor, Store
    store = Store(store_root)
    for layer in layers:
        with open_layer(store, Descriptor(layer.media_type, layer.digest, layer.size)) as raw:
            counted = Counter(raw)
            with tarfile.open(fileobj=counted, mode="r|") as archive:  # type: ignore[call-overload]
                layer.files = sum(member.size for member in archive if member.isreg())
            while counted.read(1 << 20):   # the end-of-archive blocks and padding
                pass
            layer.tar = counted.count


def big_layer_bytes(store_root: Path) -> bytes:
    """The uncompressed tar of the only layer in a store that holds just the cuBLAS layer."""
    from dream.oci.read import open_layer
    from dream.store import Descriptor, Store
    store = Store(store_root)
    refs = list(store.refs.rglob("*.json"))
    if len(refs) != 1:
        raise RuntimeError(f"expected one layer ref in {store_root}, found {len(refs)}")
    descriptor = Descriptor.from_json(json.loads(refs[0].read_text()))
    with open_layer(store, descriptor) as stream:
        return stream.read()


def limits(data: bytes, repeat: int = 3) -> dict[str, float]:
    """Best-of-``repeat`` seconds, on one core, for what dream's layer writer does per chunk:
    ISA-L gzip level 1 (dream's codec: compressobj(1, DEFLATED, 31)) in 1 MiB chunks, sha256 of
    the tar, sha256 of the compressed stream, and all three in sequence."""
    from isal import isal_zlib
    view, step = memoryview(data), 1 << 20
    chunks = [view[i:i + step] for i in range(0, len(view), step)]
    best: dict[str, float] = {}

    def timed(name: str, work) -> None:
        for _ in range(repeat):
            start = time.perf_counter()
            work()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)

    compressed: list[bytes] = []

    def gzip() -> None:
        compressed.clear()
        comp = isal_zlib.compressobj(1, zlib.DEFLATED, 31)
        for chunk in chunks:
            compressed.append(comp.compress(chunk))
        compressed.append(comp.flush())

    def sha_tar() -> None:
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        digest.hexdigest()

    def pipeline() -> None:
        comp, tar_digest, gz_digest = isal_zlib.compressobj(1, zlib.DEFLATED, 31), hashlib.sha256(), hashlib.sha256()
        for chunk in chunks:
            tar_digest.update(chunk)
            gz_digest.update(comp.compress(chunk))
        gz_digest.update(comp.flush())

    timed("gzip", gzip)
    best["gzip_bytes"] = float(sum(len(c) for c in compressed))
    compressed.clear()
    timed("sha256", sha_tar)
    timed("pipeline", pipeline)
    return best


def inflate_seconds(blob: Path, repeat: int = 3) -> float:
    """Best-of-``repeat`` seconds to inflate the layer's own gzip blob on one core (isal, 1 MiB
    reads). A wheel's big files are kept in the blob as the wheel's deflate streams, so for a
    wheel layer this, not compressing, is the floor: the diff_id needs every byte inflated."""
    from isal import igzip
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with igzip.open(blob, "rb") as stream:
            while stream.read(1 << 20):
                pass
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------- docker side

def lock_pins(lock_path: Path) -> list[str]:
    """name==version of every wheel in the lock's `cuda` and `python` entries."""
    lock = json.loads(lock_path.read_text())
    return [f"{w['name']}=={w['version']}" for entry in ("cuda", "python")
            for w in lock["layers"][entry]["wheels"]]


def dockerfile(pins: list[str]) -> str:
    """The peer-baseline Dockerfile over our base, with the lock's exact pins. USER dev at the
    end (metadata only) matches the dream image's default user."""
    return "\n".join([
        f"FROM {BASE_TAG}",
        "ENV NVIDIA_VISIBLE_DEVICES=all \\",
        "    NVIDIA_DRIVER_CAPABILITIES=compute,utility \\",
        "    PATH=/opt/venv/bin:$PATH",
        "USER root",
        "COPY ca-certificates.crt /etc/pip-ca.crt",
        "RUN python3 -m venv /opt/venv",
        "RUN /opt/venv/bin/pip install --no-cache-dir --cert /etc/pip-ca.crt " + " ".join(pins),
        "RUN useradd -m -u 1000 -s /bin/bash dev",
        "COPY --chown=1000:1000 bashrc /home/dev/.bashrc",
        "COPY app/ /app/",
        'CMD ["python3", "/app/main.py"]',
        "USER dev",
    ]) + "\n"


def make_context(ctx: Path, pins: list[str]) -> None:
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile(pins))
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", ctx / "ca-certificates.crt")
    shutil.copy2(REPO / "dream" / "presets" / "home" / "bashrc", ctx / "bashrc")
    shutil.copytree(REPO / "recipes" / "gpu-app", ctx / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def step_times(result: Run) -> list[str]:
    """Each Dockerfile step and the seconds until the next one started (or the build ended);
    for a RUN, also the gap between its last output line and "Removing intermediate container",
    which is about the time the builder spent committing the container to a layer."""
    stamps = result.stamps
    starts = [i for i, (_, line) in enumerate(stamps) if re.match(r"^Step \d+/\d+ : ", line)]
    out = []
    for n, i in enumerate(starts):
        end = stamps[starts[n + 1]][0] if n + 1 < len(starts) else result.seconds
        step, seconds = stamps[i][1].split(" : ", 1)[1], end - stamps[i][0]
        if seconds < 0.5:
            continue
        stop = starts[n + 1] if n + 1 < len(starts) else len(stamps)
        removing = [j for j in range(i + 1, stop) if "Removing intermediate container" in stamps[j][1]]
        printed = removing and "Running in" not in stamps[removing[0] - 1][1]  # the RUN said something
        commit = (f" (commit ≈ {stamps[removing[0]][0] - stamps[removing[0] - 1][0]:.1f} s)"
                  if printed else "")
        out.append(f"{short(step)} {seconds:.1f} s{commit}")
    return out


def step_name(created_by: str) -> str:
    """A history entry's command without the legacy builder's `/bin/sh -c #(nop)` prefix."""
    return re.sub(r"^/bin/sh -c (#\(nop\) )?", "", created_by).strip()


def short(step: str) -> str:
    return step if len(step) <= 40 else step[:37] + "..."


class Docker:
    """`docker build` with the legacy builder (DOCKER_BUILDKIT=0), recording every image ID it
    prints so cleanup removes exactly what this run made."""

    def __init__(self, ctx: Path) -> None:
        self.ctx = ctx
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        self.made: list[str] = []
        self.tags: list[str] = []

    def build(self, tag: str, no_cache: bool) -> Run:
        cmd = ["docker", "build", *(["--no-cache"] if no_cache else []), "--network", "host",
               "-t", tag, "."]
        self.tags.append(tag)
        result = run(cmd, cwd=self.ctx, env=self.env, check=False)
        self.made += re.findall(r"^ ---> ([0-9a-f]{12})$", result.output, re.M)
        if result.rc != 0:
            raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {result.rc}):\n{result.output[-3000:]}")
        return result

    def inspect(self, ref: str) -> dict:
        return json.loads(run(["docker", "image", "inspect", ref]).output)[0]

    def layer_sizes(self, ref: str) -> list[tuple[str, int, str]]:
        """(diffID, bytes, created_by) per layer, oldest first: `docker history` sizes of the
        entries that made a layer (size > 0), matched to RootFS.Layers; checked to add up."""
        info = self.inspect(ref)
        layers, total = info["RootFS"]["Layers"], info["Size"]
        history = run(["docker", "history", "--no-trunc", "--human=false",
                       "--format", "{{.Size}}\t{{.CreatedBy}}", ref]).output.splitlines()
        entries = [(int(size), by) for size, by in (line.split("\t", 1) for line in reversed(history))]
        sized = [(size, by) for size, by in entries if size > 0]
        if len(sized) != len(layers) or sum(size for size, _ in sized) != total:
            raise RuntimeError(f"docker history of {ref} does not map onto its {len(layers)} layers "
                               f"({len(sized)} entries with a size, {sum(s for s, _ in sized):,} B "
                               f"of {total:,} B)")
        return [(diff, size, by) for diff, (size, by) in zip(layers, sized)]

    def cleanup(self, base_loaded: bool) -> list[str]:
        """Untag ours (newest first), then remove the images our builds made that are left
        (untagged intermediates); returns what could not be removed."""
        problems = []
        refs = [*reversed(self.tags), *([BASE_TAG] if base_loaded else []), *reversed(self.made)]
        for ref in refs:
            result = run(["docker", "rmi", ref], env=self.env, check=False)
            if result.rc != 0 and "No such image" not in result.output:
                problems.append(f"docker rmi {ref}: {result.output.strip()[:200]}")
        return problems


class Engine:
    """The Docker engine: used if running; otherwise started here (and stopped at the end)."""

    def __init__(self, log: Path) -> None:
        self.log, self.proc = log, None

    def __enter__(self) -> "Engine":
        if shutil.which("docker") is None:
            raise SystemExit("bench: docker is not installed")
        if run(["docker", "info"], check=False).rc != 0:
            say("bench: the Docker engine is not running; starting dockerd")
            self.proc = subprocess.Popen(["dockerd"], stdout=open(self.log, "wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True)
            for _ in range(60):
                time.sleep(1)
                if run(["docker", "info"], check=False).rc == 0:
                    break
            else:
                raise SystemExit(f"bench: dockerd did not come up (log: {self.log})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- report

def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def part(changed: int, total: int) -> str:
    return f"{changed:,} B of {total:,} ({100 * changed / total:.2f} %)"


def facts() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    server = run(["docker", "version", "--format", "{{.Server.Version}}"], check=False).output.strip()
    client = run(["docker", "version", "--format", "{{.Client.Version}}"], check=False).output.strip()
    driver = run(["docker", "info", "--format", "{{.Driver}}"], check=False).output.strip()
    import isal
    return [f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"machine: nproc {os.cpu_count()}, {cpu}, {mem / 2**20:.1f} GiB RAM",
            f"Docker: engine {server}, CLI {client}, storage driver {driver}, legacy builder "
            f"(DOCKER_BUILDKIT=0)",
            f"Python {sys.version.split()[0]}, isal {isal.__version__}"]


# --------------------------------------------------------------------------- the benchmark

@dataclass
class Results:
    cold: dict[str, float] = field(default_factory=dict)
    change: dict[str, float] = field(default_factory=dict)
    before: list[Layer] = field(default_factory=list)
    after: list[Layer] = field(default_factory=list)
    docker_before: list[tuple[str, int, str]] = field(default_factory=list)
    docker_after: list[tuple[str, int, str]] = field(default_factory=list)
    big: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def benchmark(root: Path, quick: bool, docker: Docker) -> tuple[Results, bool]:
    res = Results()
    project = gpu_project(root / "project")
    base_loaded = False

    # 1a. cold, warm download caches (default DREAM_CACHE).
    store = root / "store"
    out = project.doit(store, f"build:{IMAGE}")
    res.cold["dream_warm"] = out.seconds
    say(f"  cold build, warm caches       dream   {out.seconds:7.2f} s  ran {ran_layers(out)}")
    res.before = image_layers(store)

    # 1b. cold, empty download caches: apt lists, .debs and wheels are downloaded.
    if not quick:
        project.forget()
        out = project.doit(root / "store-nocache", f"build:{IMAGE}", cache=root / "cache-empty")
        res.cold["dream_empty"] = out.seconds
        say(f"  cold build, empty caches      dream   {out.seconds:7.2f} s")
        downloaded = sum(p.stat().st_size for p in (root / "cache-empty").rglob("*") if p.is_file())
        res.notes.append(f"empty-cache build downloaded {downloaded:,} B into its DREAM_CACHE")
        if image_layers(root / "store-nocache") != res.before:
            res.notes.append("WARNING: the empty-cache build made different layer digests")
        else:
            res.notes.append("the empty-cache build made the same layer digests as the warm one")
        shutil.rmtree(root / "store-nocache")
        shutil.rmtree(root / "cache-empty")

    # 1c. cold above an existing base: only the Debian layer already in the store (as docker
    # starts FROM a base image).
    project.forget()
    above = root / "store-above"
    project.doit(above, f"layer:{IMAGE}/debian")
    out = project.doit(above, f"build:{IMAGE}")
    res.cold["dream_above"] = out.seconds
    say(f"  cold build, Debian layer there dream  {out.seconds:7.2f} s")
    shutil.rmtree(above)

    # 4. the biggest layer alone, fresh store, warm wheel cache.
    project.forget()
    single = root / "store-big"
    out = project.doit(single, f"layer:{BIG_LAYER}")
    res.big["seconds"] = out.seconds
    data = big_layer_bytes(single)
    res.big["tar"] = float(len(data))
    blobs = [p for p in (single / "blobs").rglob("*") if p.is_file()]
    res.big["blob"] = float(sum(p.stat().st_size for p in blobs))
    res.big["inflate"] = inflate_seconds(max(blobs, key=lambda p: p.stat().st_size))
    shutil.rmtree(single)
    res.big.update(limits(data))
    del data
    say(f"  layer {BIG_LAYER}       dream   {res.big['seconds']:7.2f} s  "
        f"({res.big['tar'] / MB:,.0f} MB of tar)")

    # 2. add rich: lock, then build, into the store of 1a.
    add_rich(project)
    lock = project.doit(store, f"lock:{IMAGE}")
    build = project.doit(store, f"build:{IMAGE}")
    res.change.update(dream_lock=lock.seconds, dream_build=build.seconds)
    say(f"  add {RICH}: lock {lock.seconds:.2f} s, build {build.seconds:.2f} s  ran {ran_layers(build)}")
    res.after = image_layers(store)
    measure_uncompressed(store, res.after)

    # 3. the peer: base built and loaded by dream (untimed in the tables), then docker build.
    base = base_project(root / "base")
    base_store = root / "store-base"
    if run(["docker", "image", "inspect", BASE_TAG], check=False).rc == 0:
        raise SystemExit(f"bench: {BASE_TAG} already exists in Docker; remove it or rename BASE")
    setup = [base.doit(base_store, f"lock:{BASE}"), base.doit(base_store, f"build:{BASE}")]
    base_loaded = True
    setup.append(base.doit(base_store, f"load:{BASE}"))
    res.notes.append(f"setup (untimed in the tables): dream lock + build + load of {BASE_TAG} "
                     f"(Debian + python3-venv) took {sum(r.seconds for r in setup):.1f} s")
    shutil.rmtree(base_store)

    make_context(root / "ctx", lock_pins(REPO / "recipes" / f"{IMAGE}.lock.json"))
    cold = docker.build(f"{PEER}:v1", no_cache=True)
    res.cold["docker"] = cold.seconds
    say(f"  cold build (--no-cache)       docker  {cold.seconds:7.2f} s")
    res.notes.append("docker cold build, steps over 0.5 s: " + "; ".join(step_times(cold)))
    dockerfile_path = root / "ctx" / "Dockerfile"
    text = dockerfile_path.read_text()
    pip_line = next(line for line in text.splitlines() if "pip install" in line)
    dockerfile_path.write_text(text.replace(pip_line, f"{pip_line} {RICH}"))
    again = docker.build(f"{PEER}:v2", no_cache=False)
    res.change["docker"] = again.seconds
    cached = len(re.findall(r"Using cache", again.output))
    say(f"  add {RICH}                docker  {again.seconds:7.2f} s  ({cached} steps from cache)")
    res.notes.append("docker rebuild with rich, steps over 0.5 s: " + "; ".join(step_times(again)))
    res.docker_before = docker.layer_sizes(f"{PEER}:v1")
    res.docker_after = docker.layer_sizes(f"{PEER}:v2")
    return res, base_loaded


def report(res: Results, quick: bool) -> list[str]:
    lines: list[str] = []
    dc = res.cold.get("docker")
    lines += ["**Cold build** (wall seconds; dream: `doit build:gpu-image` into an empty store; "
              "docker: `docker build --no-cache` FROM the loaded base, one build, compared on every row)", ""]
    rows = [("cold, warm download caches", secs(res.cold.get("dream_warm")), secs(dc),
             ratio(dc, res.cold.get("dream_warm")))]
    rows.append(("cold, empty download caches", secs(res.cold.get("dream_empty")), secs(dc),
                 ratio(dc, res.cold.get("dream_empty"))) if not quick else
                ("cold, empty download caches", "skipped (--quick)", secs(dc), "n/a"))
    rows.append(("cold above the base (Debian layer in store)", secs(res.cold.get("dream_above")),
                 secs(dc), ratio(dc, res.cold.get("dream_above"))))
    lines += table(("scenario", "dream", "docker build", "docker/dream"), rows) + [""]

    ch = res.change
    total = ch["dream_lock"] + ch["dream_build"]
    lines += [f"**Adding `{RICH}`** (wall seconds; dream: edit the recipe, `doit lock:gpu-image`, "
              "`doit build:gpu-image`; docker: append it to the pip line, `docker build` with cache)", ""]
    lines += table(("step", "dream", "docker build", "docker/dream"), [
        ("lock", secs(ch["dream_lock"]), "n/a (no lock step)", "n/a"),
        ("build", secs(ch["dream_build"]), secs(ch["docker"]), ratio(ch["docker"], ch["dream_build"])),
        ("lock + build", secs(total), secs(ch["docker"]), ratio(ch["docker"], total)),
    ]) + [""]

    before = {layer.digest for layer in res.before}
    changed = [layer for layer in res.after if layer.digest not in before]
    d_before = {diff for diff, _, _ in res.docker_before}
    d_changed = [(diff, size, by) for diff, size, by in res.docker_after if diff not in d_before]
    d_total = sum(size for _, size, _ in res.docker_after)
    d_bytes = sum(size for _, size, _ in d_changed)
    gz = (sum(x.size for x in changed), sum(x.size for x in res.after))
    tar = (sum(x.tar for x in changed), sum(x.tar for x in res.after))
    files = (sum(x.files for x in changed), sum(x.files for x in res.after))
    lines += [f"**Bytes changed by adding `{RICH}`** (layers of the new image whose digest the old "
              "image lacks, against the whole new image)", ""]
    lines += table(("measure", "dream", "docker build", "docker/dream"), [
        ("layers changed", f"{len(changed)} of {len(res.after)} ({', '.join(x.name for x in changed)})",
         f"{len(d_changed)} of {len(res.docker_after)}", "n/a"),
        ("compressed (gzip blobs)", part(*gz), "n/a (compressed at push)", "n/a"),
        ("uncompressed tar stream", part(*tar), "n/a", "n/a"),
        ("file content (Docker's Size)", part(*files), part(d_bytes, d_total), ratio(d_bytes, files[0])),
    ]) + [""]
    res.notes.append("docker layers changed: " + "; ".join(
        f"{short(step_name(by))} {size:,} B" for _, size, by in d_changed))

    big = res.big
    dream_rate = big["tar"] / big["seconds"]
    gzip_rate, sha_rate, pipe_rate = (big["tar"] / big[k] for k in ("gzip", "sha256", "pipeline"))
    lines += [f"**Biggest layer, `{BIG_LAYER}`** ({big['tar']:,.0f} B of tar, gzip blob "
              f"{big['blob']:,.0f} B; dream: `doit layer:{BIG_LAYER}` into a fresh store, warm wheel "
              "cache, process start-up and wheel unzip included; limits: best of 3 on the same tar "
              "in memory, one core, 1 MiB chunks)", ""]
    lines += table(("what", "seconds", "MB/s of tar", "fraction of the isal limit"), [
        (f"dream `doit layer:{BIG_LAYER}`", f"{big['seconds']:.2f}", f"{dream_rate / MB:,.0f}",
         f"{dream_rate / gzip_rate:.2f}"),
        ("isal_zlib.compressobj(1, DEFLATED, 31) (dream's gzip codec)", f"{big['gzip']:.2f}",
         f"{gzip_rate / MB:,.0f}", "1.00"),
        ("hashlib.sha256 of the tar", f"{big['sha256']:.2f}", f"{sha_rate / MB:,.0f}",
         f"{sha_rate / gzip_rate:.2f}"),
        ("gzip + sha256(tar) + sha256(gzip), in sequence", f"{big['pipeline']:.2f}",
         f"{pipe_rate / MB:,.0f}", f"{pipe_rate / gzip_rate:.2f}"),
        ("isal inflate of the layer's blob (its files are the wheel's deflate streams)",
         f"{big['inflate']:.2f}", f"{big['tar'] / big['inflate'] / MB:,.0f}",
         f"{big['tar'] / big['inflate'] / gzip_rate:.2f}"),
    ]) + [""]
    res.notes.append(f"isal gzip-1 output for the cuBLAS tar: {big['gzip_bytes']:,.0f} B "
                     f"(the store's blob: {big['blob']:,.0f} B); dream reaches "
                     f"{dream_rate / pipe_rate:.2f} of the in-sequence limit")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the empty-download-cache cold build")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    root = out / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir()
    problems: list[str] = []
    with Engine(root / "dockerd.log"):
        info = facts()
        say("\n".join(info) + f"\nscratch: {root}\n")
        docker = Docker(root / "ctx")
        base_loaded = False
        try:
            res, base_loaded = benchmark(root, args.quick, docker)
        except BaseException:
            base_loaded = run(["docker", "image", "inspect", BASE_TAG], check=False).rc == 0 \
                and "gpu-base" in run(["docker", "image", "inspect", "--format",
                                       "{{json .Config.Labels}}", BASE_TAG], check=False).output
            raise
        finally:
            problems = docker.cleanup(base_loaded)
            if args.keep:
                say(f"\nkept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    lines = report(res, args.quick)
    say("")
    say("\n".join(f"- {fact}" for fact in info))
    say("")
    say("\n".join(lines))
    for note in res.notes + problems:
        say(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
