"""PyTorch CUDA image benchmark: dream vs `docker build` (legacy builder) on an app of its own.

Run from the repository root:
    python bench/torch_bench.py [--keep] [--skip-empty-caches] [--runs N] [--smoke]

The workload (written by this script into ``bench/out/torch-*``, git-ignored) is a dream project
with ``recipes/torch-app.yaml``: Debian 12 + Python 3.11 (the ``debian-python`` preset), a ``cuda``
layer that follows torch's own CUDA pins (``version: python``: CUDA 12.8.1 for torch 2.8.0),
a ``python`` layer with ``torch==2.8.0``, ``torchvision==0.23.0`` and every other distribution
they pull in pinned exactly, a ``files`` layer with a small ``http.server`` app that imports torch,
and a ``services`` layer that runs it as the service ``web`` of the deployment ``torch-app``. Its
peer is an equivalent Dockerfile: the same Debian base (plus Debian's ``python3-pip``) built and
loaded by dream, ``pip install`` of the same pinned wheels (``==`` and ``--hash`` from the lock)
into the same site directory, ``COPY`` of the same app. Measured in one run, each for both:

1. cold, empty download caches (``--skip-empty-caches`` leaves this pair out);
2. cold, warm download caches (dream also with only its Debian layer already in the store, as
   docker starts FROM a base);
3. no-op (``--runs`` times, median);
4. one-file change in the app (``--runs`` times, median), and for dream also ``doit load`` after it;
5. one added small requirement (``six==1.17.0``): dream's lock and build, docker's rebuild; the
   layers that changed and their bytes (dream: the new blobs, compressed, what a push sends;
   docker: the changed layers' sizes, uncompressed, compressed only at push);
6. the first ``python3 -c 'import torch, torchvision'`` in a new container (``--runs``, median);
7. ``doit load:torch-app``: first load, and after the one-file change (seconds, bytes sent);
8. the biggest layer: dream's throughput as a fraction of ISA-L gzip-1's single-core limit on
   the same bytes (as bench/gpu_bench.py).

``--smoke`` swaps torch for ``six`` (no cuda layer, ``idna`` as the added requirement) so the
whole flow, docker builds and loads included, runs in a few minutes. Everything happens in
``bench/out/torch-*``, removed at the end with the Docker images and containers the run made,
also on failure or Ctrl-C (``--keep`` keeps the directory). See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from gpu_bench import inflate_seconds  # noqa: E402  (bench/ is the script's folder)

REPO = Path(__file__).resolve().parent.parent
IMAGE = "torch-app"
BASE = "torch-base"
BASE_TAG = f"{BASE}:latest"
PEER = "torch-peer"
LABEL = "dream.bench"          # our images carry it, so cleanup and the pre-check know them
PORT = 8000
MB = 1e6

# torch 2.8.0 and torchvision 0.23.0 for CPython 3.11 on manylinux x86_64, and every distribution
# they pull in that neither pins itself (torch pins triton and the nvidia-* wheels), pinned here at
# what the lock resolved on 2026-12-01, so no pin follows the index's newest release of the day.
TORCH_PINS = ["torch==2.8.0", "torchvision==0.23.0", "filelock==4.3.1", "fsspec==2026.9.0",
              "jinja2==3.1.6", "markupsafe==3.0.4", "mpmath==1.3.0", "networkx==3.6.1",
              "numpy==2.4.6", "pillow==13.0.0", "setuptools==84.2.1", "sympy==1.14.0",
              "typing-extensions==4.16.0"]
ADDED = "six==1.17.0"          # the one added small requirement (pure Python, 11 kB)
SMOKE_PINS = ["six==1.17.0"]
SMOKE_ADDED = "idna==3.20"

SERVER = '''\
"""torch-app: GET / answers torch's version and a tiny tensor sum (bench/torch_bench.py)."""
import http.server
import json
import os

{imports}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        body = json.dumps({{"version": {version}, "sum": {total}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "{port}"))), Handler).serve_forever()
'''


@dataclass(frozen=True)
class Workload:
    """What the image holds: the full torch app, or the smoke test's stand-in."""

    smoke: bool
    pins: tuple[str, ...]
    added: str
    imports: str               # the `python3 -c` of the import scenario
    server_imports: str
    server_version: str
    server_sum: str

    @staticmethod
    def of(smoke: bool) -> "Workload":
        if smoke:
            return Workload(True, tuple(SMOKE_PINS), SMOKE_ADDED, "import six", "import six",
                            '"six " + six.__version__', "float(sum(range(12)))")
        return Workload(False, tuple(TORCH_PINS), ADDED, "import torch, torchvision", "import torch",
                        "torch.__version__", "float(torch.arange(12.0).sum())")


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
    try:
        stamps = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    rc = proc.wait()
    seconds = time.perf_counter() - start
    output = "\n".join(line for _, line in stamps)
    if check and rc != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {rc}):\n{output[-3000:]}")
    return Run(seconds, output, rc, stamps)


def say(text: str) -> None:
    print(text, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def tree_bytes(path: Path) -> int:
    """Apparent size of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
    return total


# --------------------------------------------------------------------------- the dream project

def recipe_text(work: Workload, requirements: list[str]) -> str:
    imports = "[debian-python]" if work.smoke else "[debian-python, cuda-12]"
    cuda = "" if work.smoke else """\
  - name: cuda
    comment: CUDA from torch's own pins (version python), the runtime, cuBLAS and NVRTC
    cuda:
      version: python
      components: [cudart, cublas, nvrtc]
"""
    return f"""\
# torch-app (bench/torch_bench.py): Debian 12 + Python 3.11, CUDA from torch's pins, torch and
# torchvision, a small HTTP server as the service `web` under dream's supervisor.
imports: {imports}
image:
  name: {IMAGE}
  tags: [latest]
  labels: {{{LABEL}: torch-app}}
python:
  version: "3.11"
deployments:
  {IMAGE}:
    services: [web]
services:
  web:
    description: GET / answers torch's version and a tiny tensor sum
    command: [python3, /app/server.py]
    env: {{PORT: "{PORT}"}}
    ports: [{PORT}]
    readiness: {{http: {{path: /}}, period: 500ms, failure_threshold: 240}}
layers:
{cuda}  - name: python
    comment: torch, torchvision and everything they need, pinned
    python:
      requirements: [{", ".join(requirements)}]
  - name: services
    comment: dream's supervisor and the torch-app deployment
    services:
      deployment: {IMAGE}
  - name: app
    comment: the HTTP server, on top (the engine re-fetches every layer above a changed one)
    files:
      - {{dest: /app, src: torch-app, exclude: ["__pycache__", "*.pyc"]}}
"""


BASE_RECIPE = f"""\
# The docker peer's base (bench/torch_bench.py): torch-app's Debian layer plus Debian's pip.
imports: [debian-python]
image:
  name: {BASE}
  tags: [latest]
  labels: {{{LABEL}: torch-base}}
layers:
  - name: debian
    debian:
      packages: [python3-pip]
"""


class Project:
    """The scratch dream project, run with DREAM_STORE, DREAM_CACHE, uv's and pip's caches all
    inside the scratch directory (never the repository's .dream/ or ~/.cache/dream)."""

    def __init__(self, root: Path, scratch: Path, work: Workload) -> None:
        self.root, self.scratch, self.work = root, scratch, work
        self.app = root / "recipes" / IMAGE / "server.py"
        self.server = SERVER.format(imports=work.server_imports, version=work.server_version,
                                    total=work.server_sum, port=PORT)

    def write(self) -> None:
        self.root.mkdir(parents=True)
        shutil.copy2(REPO / "dodo.py", self.root / "dodo.py")
        shutil.copytree(REPO / "dream" / "presets", self.root / "layers",
                        ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
        (self.root / "recipes" / IMAGE).mkdir(parents=True)
        self.set_requirements(list(self.work.pins))
        (self.root / "recipes" / f"{BASE}.yaml").write_text(BASE_RECIPE)
        self.app.write_text(self.server)

    def set_requirements(self, requirements: list[str]) -> None:
        (self.root / "recipes" / f"{IMAGE}.yaml").write_text(recipe_text(self.work, requirements))

    def env(self, store: Path, cache: Path, pip_cache: Path | None = None) -> dict[str, str]:
        env = {**os.environ, "DREAM_STORE": str(store), "DREAM_CACHE": str(cache),
               "UV_CACHE_DIR": str(self.scratch / "uv-cache"),
               "PIP_CACHE_DIR": str(pip_cache or self.scratch / "pip-cache"),
               "DREAM_LAYER_CACHE": "off"}
        env.pop("DREAM_LOAD_VIA", None)
        return env

    def doit(self, store: Path, cache: Path, *args: str, pip_cache: Path | None = None) -> Run:
        return run([sys.executable, "-m", "doit", *args], cwd=self.root, env=self.env(store, cache, pip_cache))

    def forget(self) -> None:
        """Remove doit's database and the recipe cache, so a cold build is also cold for doit."""
        shutil.rmtree(self.root / ".dream", ignore_errors=True)

    def lock(self, image: str = IMAGE) -> dict:
        return json.loads((self.root / "recipes" / f"{image}.lock.json").read_text())


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


def image_layers(store_root: Path, name: str = IMAGE) -> tuple[list[Layer], str]:
    """The layers of image ``name`` in a store (index.json → tag → manifest → layers, named after
    the config's history, ``dream layer NAME``) and the config digest (the engine's image ID)."""
    from dream.store import Store
    store = Store(store_root)
    tagged = store.tagged(name)
    if tagged is None:
        raise RuntimeError(f"{name} is not tagged in {store_root}")
    manifest = store.read_json(tagged.digest)
    history = store.read_json(manifest["config"]["digest"])["history"]
    names = [h["created_by"].removeprefix("dream layer ") for h in history if not h.get("empty_layer")]
    return ([Layer(n, layer["mediaType"], layer["digest"], layer["size"])
             for n, layer in zip(names, manifest["layers"])], manifest["config"]["digest"])


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


def layer_bytes(store_root: Path, layer: Layer) -> bytes:
    """A layer's uncompressed tar, in memory."""
    from dream.oci.read import open_layer
    from dream.store import Descriptor, Store
    with open_layer(Store(store_root), Descriptor(layer.media_type, layer.digest, layer.size)) as stream:
        return stream.read()


def limits(data: bytes, repeat: int = 3) -> dict[str, float]:
    """Best-of-``repeat`` seconds, on one core, for what dream's layer writer does per chunk:
    ISA-L gzip level 1 (dream's codec: compressobj(1, DEFLATED, 31)) in 1 MiB chunks, sha256 of
    the tar, and gzip + sha256 of the tar + sha256 of the gzip stream in sequence (copied from
    bench/gpu_bench.py: bench scripts run alone)."""
    from isal import isal_zlib
    view, step = memoryview(data), 1 << 20
    chunks = [view[i:i + step] for i in range(0, len(view), step)]
    best: dict[str, float] = {}

    def timed(name: str, work) -> None:
        for _ in range(repeat):
            start = time.perf_counter()
            work()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)

    size = [0]

    def gzip() -> None:
        comp, size[0] = isal_zlib.compressobj(1, zlib.DEFLATED, 31), 0
        for chunk in chunks:
            size[0] += len(comp.compress(chunk))
        size[0] += len(comp.flush())

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
    best["gzip_bytes"] = float(size[0])
    timed("sha256", sha_tar)
    timed("pipeline", pipeline)
    return best


LOADED = re.compile(r"^loaded .+ \((\d+) of (\d+) layers sent, ([\d,]+) bytes\)", re.M)


def load_summary(result: Run) -> tuple[int, int, int]:
    """(layers sent, layers, bytes sent) from `doit load`'s last line."""
    found = LOADED.search(result.output)
    if not found:
        raise RuntimeError(f"`doit load` printed no summary line:\n{result.output[-2000:]}")
    return int(found[1]), int(found[2]), int(found[3].replace(",", ""))


# --------------------------------------------------------------------------- the docker peer

def requirements_txt(lock: dict) -> str:
    """Every wheel of the lock's `cuda` and `python` entries as `name==version --hash=sha256:…`."""
    return "".join(f"{w['name']}=={w['version']} --hash=sha256:{w['sha256']}\n"
                   for entry in ("cuda", "python") if entry in lock["layers"]
                   for w in lock["layers"][entry]["wheels"])


def locked_wheels(lock: dict) -> list[dict]:
    return [w for entry in ("cuda", "python") if entry in lock["layers"] for w in lock["layers"][entry]["wheels"]]


def pip_conf(ctx: Path) -> tuple[str, list[str]]:
    """pip.conf for the build container from this machine's pip configuration (files and PIP_*
    variables, as `pip config list` shows them): the index, extra indexes, find-links and trusted
    hosts that are URLs a container can reach, the timeout, and the CA bundle (copied into the
    context). Local paths and file:// indexes are left out (not in the container), as is a
    constraint file; returns the text and what was left out. Nothing here names an index."""
    from dream.python.index import pip_settings
    settings = pip_settings()
    remote = lambda value: [v for v in value.split() if re.match(r"https?://", v)]  # noqa: E731
    lines, dropped = ["[global]"], []
    for key in ("index-url", "extra-index-url", "find-links"):
        if settings.get(key):
            keep = remote(settings[key])
            dropped += [f"{key} {v}" for v in settings[key].split() if v not in keep]
            if keep:
                lines.append(f"{key} = {' '.join(keep)}")
    for key in ("trusted-host", "timeout", "default-timeout", "retries", "proxy"):
        if settings.get(key):
            lines.append(f"{key} = {settings[key]}")
    if settings.get("cert"):
        shutil.copy2(settings["cert"], ctx / "pip-ca.crt")
        lines.append("cert = /etc/pip-ca.crt")
    for key in ("constraint", "requirement"):
        if settings.get(key):
            dropped.append(f"{key} {settings[key]}")
    return "\n".join(lines) + "\n", dropped


def dockerfile(cert: bool) -> str:
    """The peer: FROM the dream-built base, the cuda layer's NVIDIA variables, the machine's pip
    configuration, `pip install` of the lock's wheels (exact pins and hashes, no dependency
    resolution) into Debian's /usr/local site directory, the app, its port and command. pip's
    source is a build argument: the index (empty caches) or the loopback wheel mirror (warm)."""
    return "\n".join([
        f"FROM {BASE_TAG}",
        "ENV NVIDIA_VISIBLE_DEVICES=all \\",
        "    NVIDIA_DRIVER_CAPABILITIES=compute,utility \\",
        f"    PORT={PORT}",
        "COPY pip.conf /etc/pip.conf",
        *(["COPY pip-ca.crt /etc/pip-ca.crt"] if cert else []),
        "COPY requirements.txt /tmp/requirements.txt",
        "ARG PIP_SOURCE=",
        "RUN pip install --break-system-packages --root-user-action=ignore --no-cache-dir --no-deps "
        "--require-hashes --progress-bar off $PIP_SOURCE -r /tmp/requirements.txt",
        "COPY app/ /app/",
        f"EXPOSE {PORT}",
        'CMD ["python3", "/app/server.py"]',
    ]) + "\n"


def step_times(result: Run) -> list[str]:
    """Each Dockerfile step over 0.5 s and the seconds until the next one started (or the build
    ended); for a RUN, also the gap between its last output line and "Removing intermediate
    container", about the time the builder spent committing the container to a layer."""
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
        printed = removing and "Running in" not in stamps[removing[0] - 1][1]
        commit = (f" (commit ≈ {stamps[removing[0]][0] - stamps[removing[0] - 1][0]:.1f} s)"
                  if printed else "")
        out.append(f"{short(step)} {seconds:.1f} s{commit}")
    return out


def step_name(created_by: str) -> str:
    return re.sub(r"^/bin/sh -c (#\(nop\) )?", "", created_by).strip()


def short(step: str) -> str:
    return step if len(step) <= 40 else step[:37] + "..."


class Docker:
    """`docker build` with the legacy builder (DOCKER_BUILDKIT=0), recording every image ID it
    prints, every tag and container, and every dream image it loaded, so cleanup removes exactly
    what this run made."""

    def __init__(self, ctx: Path) -> None:
        self.ctx = ctx
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        self.made: list[str] = []
        self.tags: list[str] = []
        self.loaded: list[str] = []       # image IDs (config digests) of images dream loaded
        self.containers: list[str] = []

    def build(self, tag: str, no_cache: bool, args: dict[str, str]) -> Run:
        cmd = ["docker", "build", *(["--no-cache"] if no_cache else []), "--network", "host",
               *(x for k, v in args.items() for x in ("--build-arg", f"{k}={v}")), "-t", tag, "."]
        if tag not in self.tags:
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

    def remove(self, tag: str) -> None:
        """Untag one of ours now (its untagged intermediates go with it), to free the disk."""
        run(["docker", "rmi", tag], env=self.env, check=False)
        if tag in self.tags:
            self.tags.remove(tag)

    def drop_loaded(self) -> None:
        for image in self.loaded:
            run(["docker", "rmi", "-f", image], check=False)

    def cleanup(self, base_loaded: bool) -> list[str]:
        """Remove our containers, the images dream loaded, our tags, the base, then the images
        our builds made (intermediates, and images a rebuild left untagged), children before
        parents: passes until none is left or a pass removes nothing. Returns what is left."""
        for name in self.containers:
            run(["docker", "rm", "-f", name], check=False)
        self.drop_loaded()
        left = list(dict.fromkeys([*reversed(self.tags), *([BASE_TAG] if base_loaded else []),
                                   *reversed(self.made)]))
        errors: dict[str, str] = {}
        while left:
            still = []
            for ref in left:
                result = run(["docker", "rmi", ref], env=self.env, check=False)
                if result.rc != 0 and "No such image" not in result.output:
                    still.append(ref)
                    errors[ref] = result.output.strip()[:200]
            if len(still) == len(left):
                break
            left = still
        return [f"docker rmi {ref}: {errors[ref]}" for ref in left]

    def timed_runs(self, image: str, code: str, runs: int) -> list[float]:
        """``docker run --rm --network none IMAGE python3 -c CODE``, ``runs`` times: each a new
        container (the image's entrypoint, if any, runs first)."""
        return [run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c", code]).seconds
                for _ in range(runs)]

    def serve_check(self, image: str, tag: str) -> tuple[float, str]:
        """Start the image's default command (detached, no network but loopback) and ask
        http://127.0.0.1:PORT/ from inside until it answers: seconds from `docker run` to the
        first answer (container start, the supervisor if any, the app's imports), and the body."""
        name = f"torch-bench-{os.getpid()}-{tag}"
        self.containers.append(name)
        probe = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{PORT}/', "
                 "timeout=2).read().decode())")
        start = time.perf_counter()
        run(["docker", "run", "-d", "--rm", "--network", "none", "--name", name, image])
        try:
            while time.perf_counter() - start < 180:
                result = run(["docker", "exec", name, "python3", "-c", probe], check=False)
                if result.rc == 0:
                    return time.perf_counter() - start, result.output.strip().splitlines()[-1]
                time.sleep(0.2)
            logs = run(["docker", "logs", name], check=False).output
            raise RuntimeError(f"{image}: no answer on port {PORT} within 180 s:\n{logs[-2000:]}")
        finally:
            run(["docker", "rm", "-f", name], check=False)

    def module_dir(self, image: str, module: str) -> str:
        code = f"import {module}, os; print(os.path.dirname({module}.__file__))"
        return run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c", code]).output.strip()


class WheelMirror:
    """The docker peer's warm download cache: the lock's wheels, hard-linked by file name from
    dream's DREAM_CACHE, served by `python -m http.server` on a free 127.0.0.1 port (the build
    container shares the host's network), for `pip install --no-index --find-links URL`."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root, self.cache = root, cache
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def fill(self, wheels: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            source = self.cache / "wheels" / wheel["sha256"] / wheel["filename"]
            target = self.root / wheel["filename"]
            if target.exists():
                continue
            if not source.is_file():
                raise RuntimeError(f"{wheel['filename']} is not in {self.cache}; the dream build should have fetched it")
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)

    def __enter__(self) -> "WheelMirror":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        with open(self.root.parent / "wheel-mirror.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                          "--directory", str(self.root), str(port)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the wheel mirror did not come up")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- report

def table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def size(value: float) -> str:
    return f"{value:,.0f} B" + (f" ({value / MB:,.1f} MB)" if value >= MB else "")


def facts() -> list[str]:
    import isal
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    server = run(["docker", "version", "--format", "{{.Server.Version}}"], check=False).output.strip()
    client = run(["docker", "version", "--format", "{{.Client.Version}}"], check=False).output.strip()
    driver = run(["docker", "info", "--format", "{{.Driver}}"], check=False).output.strip()
    return [f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"machine: nproc {os.cpu_count()}, {cpu}, {mem / 2**20:.1f} GiB RAM",
            f"Docker: engine {server}, CLI {client}, storage driver {driver}, legacy builder "
            f"(DOCKER_BUILDKIT=0)",
            f"Python {sys.version.split()[0]}, isal {isal.__version__}"]


# --------------------------------------------------------------------------- the benchmark

@dataclass
class Results:
    dream: dict[str, float] = field(default_factory=dict)
    docker: dict[str, float] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    before: list[Layer] = field(default_factory=list)
    after: list[Layer] = field(default_factory=list)
    docker_before: list[tuple[str, int, str]] = field(default_factory=list)
    docker_after: list[tuple[str, int, str]] = field(default_factory=list)
    big: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, root: Path, work: Workload, runs: int, skip_empty: bool) -> None:
        self.root, self.work, self.runs, self.skip_empty = root, work, runs, skip_empty
        self.project = Project(root / "project", root, work)
        self.ctx = root / "ctx"
        self.docker = Docker(self.ctx)
        self.res = Results()
        self.base_loaded = False
        self.cache = root / "cache"          # the builds' DREAM_CACHE (empty at the start)
        self.store = root / "store"          # the main store (warm cold build onwards)
        self.lock_v1: dict = {}

    # ----------------------------------------------------------------- dream
    def dream_side(self) -> None:
        p, res, d = self.project, self.res, self.res.dream
        p.write()
        lock_cache = self.root / "cache-lock"
        out = p.doit(self.store, lock_cache, f"lock:{IMAGE}")
        d["lock"] = out.seconds
        wheels = locked_wheels(p.lock())
        say(f"  lock:{IMAGE}                   dream   {out.seconds:7.2f} s  ({len(wheels)} wheels, "
            f"{sum(int(w['size']) for w in wheels):,} B)")
        base = p.doit(self.root / "store-base", lock_cache, f"lock:{BASE}")
        res.notes.append(f"setup: `doit lock:{BASE}` {base.seconds:.1f} s (the docker peer's base, untimed in the table)")

        # 1. cold, empty download caches (or an untimed warm-up that fills the cache)
        p.forget()
        empty_store, pip_cache = self.root / "store-empty", self.root / "pip-cache-empty"
        out = p.doit(empty_store, self.cache, f"build:{IMAGE}", pip_cache=pip_cache)
        downloaded = tree_bytes(self.cache / "wheels") + tree_bytes(self.cache / "debs")
        if self.skip_empty:
            res.notes.append(f"--skip-empty-caches: an untimed build filled DREAM_CACHE ({out.seconds:.1f} s, "
                             f"{downloaded:,} B of wheels and .debs)")
        else:
            d["cold_empty"] = out.seconds
            say(f"  cold, empty caches             dream   {out.seconds:7.2f} s  ran {len(ran_layers(out))} layers")
            res.notes.append(f"dream's empty-cache build downloaded {downloaded:,} B of wheels and .debs "
                             f"into DREAM_CACHE (apt lists {tree_bytes(self.cache / 'apt'):,} B); pip's own "
                             f"cache (PIP_CACHE_DIR, fresh) held {tree_bytes(pip_cache):,} B afterwards")
        empty_layers, _ = image_layers(empty_store)
        shutil.rmtree(empty_store)
        shutil.rmtree(pip_cache, ignore_errors=True)

        # 2. cold, warm download caches: empty store, empty doit database
        p.forget()
        out = p.doit(self.store, self.cache, f"build:{IMAGE}")
        d["cold_warm"] = out.seconds
        say(f"  cold, warm caches              dream   {out.seconds:7.2f} s  ran {len(ran_layers(out))} layers")
        res.before, config = image_layers(self.store)
        res.notes.append("the empty-cache and warm-cache builds made the same layer digests"
                         if [x.digest for x in empty_layers] == [x.digest for x in res.before] else
                         "WARNING: the empty-cache build made different layer digests")

        # 2b. cold above the base: only the Debian layer already in a fresh store (docker starts
        # FROM a base image that holds it); warm download caches, empty doit database
        p.forget()
        above = self.root / "store-above"
        debian = p.doit(above, self.cache, f"layer:{IMAGE}/debian")
        out = p.doit(above, self.cache, f"build:{IMAGE}")
        d["cold_above"] = out.seconds
        res.notes.append(f"dream's Debian layer alone (the setup of the 'above the base' row) took {debian.seconds:.1f} s")
        say(f"  cold, Debian layer in store    dream   {out.seconds:7.2f} s  ran {len(ran_layers(out))} layers")
        shutil.rmtree(above)
        p.doit(self.store, self.cache, f"build:{IMAGE}")   # doit's database back on the main store (a no-op)

        # 3. no-op
        noops = [p.doit(self.store, self.cache, f"build:{IMAGE}") for _ in range(self.runs)]
        d["noop"] = median([r.seconds for r in noops])
        if any(ran_layers(r) for r in noops):
            res.notes.append(f"WARNING: a dream no-op ran layers: {ran_layers(noops[-1])}")
        say(f"  no-op (median of {self.runs})             dream   {d['noop']:7.2f} s")

        # 8. the biggest layer alone, into a fresh store, warm download cache, own doit database
        big = max(res.before, key=lambda layer: layer.size)
        single = self.root / "store-big"
        out = p.doit(single, self.cache, "--db-file", str(self.root / "big-doit.json"), f"layer:{IMAGE}/{big.name}")
        res.big["seconds"] = out.seconds
        res.text["big"] = big.name
        shutil.rmtree(single)
        data = layer_bytes(self.store, big)
        res.big["tar"], res.big["blob"] = float(len(data)), float(big.size)
        res.big.update(limits(data))
        res.big["inflate"] = inflate_seconds(self.store / "blobs" / "sha256" / big.digest.split(":", 1)[1])
        del data
        say(f"  layer {big.name} alone           dream   {out.seconds:7.2f} s  ({res.big['tar'] / MB:,.0f} MB of tar)")

        # 7a. first load: the engine holds none of this image's tags
        out = p.doit(self.store, self.cache, f"load:{IMAGE}")
        self.docker.loaded.append(config)
        d["load_first"] = out.seconds
        sent = load_summary(out)
        res.text["load_first"] = f"{sent[0]} of {sent[1]} layers, {sent[2]:,} B"
        say(f"  load, first                    dream   {out.seconds:7.2f} s  ({res.text['load_first']})")
        res.notes.append(f"image in the engine (`docker image inspect` Size): dream {IMAGE} "
                         f"{self.docker.inspect(config)['Size']:,} B; its {len(res.before)} gzip blobs "
                         f"{sum(x.size for x in res.before):,} B")

        # 6. first import in a new container, and the service's first answer
        times = self.docker.timed_runs(f"{IMAGE}:latest", self.work.imports, self.runs)
        d["import"] = median(times)
        floor = self.docker.timed_runs(f"{IMAGE}:latest", "pass", self.runs)
        say(f"  `{self.work.imports}` (median)  dream   {d['import']:7.2f} s  (runs {', '.join(f'{t:.2f}' for t in times)})")
        seconds, body = self.docker.serve_check(f"{IMAGE}:latest", "dream")
        res.notes.append(f"dream's image: `python3 -c pass` in a new container {median(floor):.2f} s (median); "
                         f"the service answered {body} {seconds:.1f} s after `docker run` (supervisor as PID 1); "
                         f"packages in {self.docker.module_dir(f'{IMAGE}:latest', self.work.server_imports.split()[-1])}")

        # 4 + 7b. one-file change: build, then load
        builds, loads = [], []
        for index in range(self.runs):
            with open(p.app, "a") as handle:
                handle.write(f"# change {index + 1}\n")
            out = p.doit(self.store, self.cache, f"build:{IMAGE}")
            builds.append(out.seconds)
            if ran_layers(out) != ["app"]:
                res.notes.append(f"one-file change {index + 1}: dream ran {ran_layers(out)}")
            _, config = image_layers(self.store)
            out = p.doit(self.store, self.cache, f"load:{IMAGE}")
            self.docker.loaded.append(config)
            loads.append(out.seconds)
            sent = load_summary(out)
            res.text["load_change"] = f"{sent[0]} of {sent[1]} layers, {sent[2]:,} B"
        d["change"], d["load_change"] = median(builds), median(loads)
        d["change_load"] = median([b + l for b, l in zip(builds, loads)])
        say(f"  one-file change (median)       dream   {d['change']:7.2f} s; load {d['load_change']:.2f} s "
            f"({res.text['load_change']})")
        self.docker.drop_loaded()           # the disk: docker's copies come next
        res.before, _ = image_layers(self.store)

        # 5. one added requirement: lock, then build
        self.lock_v1 = p.lock()
        p.set_requirements([*self.work.pins, self.work.added])
        # One DREAM_CACHE, as a user who locked and built has: the lock's own metadata (kept
        # apart so far so that the empty-cache build found nothing) joins the builds' files,
        # so the kept Debian layer finds its .debs and needs no `apt-get update`.
        shutil.copytree(lock_cache, self.cache, dirs_exist_ok=True)
        lock = p.doit(self.store, self.cache, f"lock:{IMAGE}")
        build = p.doit(self.store, self.cache, f"build:{IMAGE}")
        d["add_lock"], d["add_build"] = lock.seconds, build.seconds
        say(f"  add {self.work.added}: lock {lock.seconds:.2f} s, build {build.seconds:.2f} s  ran {ran_layers(build)}")
        res.after, _ = image_layers(self.store)
        before = {x.digest for x in res.before}
        measure_uncompressed(self.store, [x for x in res.after if x.digest not in before])

    # ----------------------------------------------------------------- docker
    def docker_side(self) -> None:
        p, res, k, docker = self.project, self.res, self.res.docker, self.docker
        base_store = self.root / "store-base"
        setup = [p.doit(base_store, self.cache, f"build:{BASE}")]
        self.base_loaded = True
        setup.append(p.doit(base_store, self.cache, f"load:{BASE}"))
        res.notes.append(f"setup: dream build + load of {BASE_TAG} (torch-app's Debian packages + python3-pip) "
                         f"took {sum(r.seconds for r in setup):.1f} s (untimed in the table)")
        shutil.rmtree(base_store)

        self.ctx.mkdir()
        conf, dropped = pip_conf(self.ctx)
        (self.ctx / "Dockerfile").write_text(dockerfile(cert=(self.ctx / "pip-ca.crt").is_file()))
        (self.ctx / "pip.conf").write_text(conf)
        if dropped:
            res.notes.append("pip settings of this machine left out of the container's pip.conf (local "
                             "paths, not in the container): " + "; ".join(dropped))
        (self.ctx / "app").mkdir()
        (self.ctx / "app" / "server.py").write_text(p.server)   # as dream's app was before its edits
        lock_v2 = p.lock()
        (self.ctx / "requirements.txt").write_text(requirements_txt(self.lock_v1))

        # 1. cold, empty pip cache: --no-cache, pip from the index
        if not self.skip_empty:
            out = docker.build(f"{PEER}:empty", no_cache=True, args={"PIP_SOURCE": ""})
            k["cold_empty"] = out.seconds
            say(f"  cold, empty caches             docker  {out.seconds:7.2f} s")
            res.notes.append("docker cold build, empty caches, steps over 0.5 s: " + "; ".join(step_times(out)))
            docker.remove(f"{PEER}:empty")

        mirror = WheelMirror(self.root / "wheelhouse", self.cache)
        mirror.fill(locked_wheels(self.lock_v1) + locked_wheels(lock_v2))
        with mirror:
            args = {"PIP_SOURCE": f"--no-index --find-links {mirror.url}"}
            # 2. cold, warm caches: --no-cache, pip from the loopback wheel mirror
            out = docker.build(f"{PEER}:v1", no_cache=True, args=args)
            k["cold_warm"] = out.seconds
            say(f"  cold, warm caches              docker  {out.seconds:7.2f} s")
            res.notes.append("docker cold build, warm caches, steps over 0.5 s: " + "; ".join(step_times(out)))
            info = docker.inspect(f"{PEER}:v1")
            res.notes.append(f"image in the engine: docker {PEER}:v1 {info['Size']:,} B in {len(info['RootFS']['Layers'])} layers")

            # 3. no-op
            k["noop"] = median([docker.build(f"{PEER}:v1", no_cache=False, args=args).seconds for _ in range(self.runs)])
            say(f"  no-op (median)                 docker  {k['noop']:7.2f} s")

            # 4. one-file change
            changes = []
            for index in range(self.runs):
                with open(self.ctx / "app" / "server.py", "a") as handle:
                    handle.write(f"# change {index + 1}\n")
                changes.append(docker.build(f"{PEER}:v1", no_cache=False, args=args).seconds)
            k["change"] = median(changes)
            say(f"  one-file change (median)       docker  {k['change']:7.2f} s")

            # 6. first import in a new container, and the service
            times = docker.timed_runs(f"{PEER}:v1", self.work.imports, self.runs)
            k["import"] = median(times)
            floor = docker.timed_runs(f"{PEER}:v1", "pass", self.runs)
            say(f"  `{self.work.imports}` (median)  docker  {k['import']:7.2f} s  (runs {', '.join(f'{t:.2f}' for t in times)})")
            seconds, body = docker.serve_check(f"{PEER}:v1", "docker")
            res.notes.append(f"docker's image: `python3 -c pass` in a new container {median(floor):.2f} s (median); "
                             f"the service answered {body} {seconds:.1f} s after `docker run` (CMD python3 directly); "
                             f"packages in {docker.module_dir(f'{PEER}:v1', self.work.server_imports.split()[-1])}")

            # 5. one added requirement: the new pins, rebuilt with cache
            (self.ctx / "requirements.txt").write_text(requirements_txt(lock_v2))
            out = docker.build(f"{PEER}:v2", no_cache=False, args=args)
            k["add_build"] = out.seconds
            say(f"  add {self.work.added}                docker  {out.seconds:7.2f} s  "
                f"({len(re.findall(r'Using cache', out.output))} steps from cache)")
            res.notes.append("docker rebuild with the added requirement, steps over 0.5 s: " + "; ".join(step_times(out)))
            res.docker_before = docker.layer_sizes(f"{PEER}:v1")
            res.docker_after = docker.layer_sizes(f"{PEER}:v2")

    # ----------------------------------------------------------------- report
    def report(self) -> list[str]:
        res, d, k, n = self.res, self.res.dream, self.res.docker, self.runs
        before = {x.digest for x in res.before}
        changed = [x for x in res.after if x.digest not in before]
        d_before = {diff for diff, _, _ in res.docker_before}
        d_changed = [(diff, sz, by) for diff, sz, by in res.docker_after if diff not in d_before]
        d_bytes = sum(sz for _, sz, _ in d_changed)
        d_total = sum(sz for _, sz, _ in res.docker_after)
        gz = sum(x.size for x in changed)
        gz_total = sum(x.size for x in res.after)
        files = sum(x.files for x in changed)
        add_total = d["add_lock"] + d["add_build"]
        big = res.big
        dream_rate = big["tar"] / big["seconds"]
        gzip_rate, pipe_rate = big["tar"] / big["gzip"], big["tar"] / big["pipeline"]
        skipped = "skipped (--skip-empty-caches)"
        not_docker = "n/a (docker build leaves the image in the engine)"
        rows = [
            (f"lock (`doit lock:{IMAGE}`; not in the build rows)", secs(d["lock"]), "n/a (no lock step)", "n/a"),
            ("cold, empty download caches", secs(d.get("cold_empty")) if not self.skip_empty else skipped,
             secs(k.get("cold_empty")) if not self.skip_empty else skipped, ratio(k.get("cold_empty"), d.get("cold_empty"))),
            ("cold, warm download caches", secs(d["cold_warm"]), secs(k["cold_warm"]), ratio(k["cold_warm"], d["cold_warm"])),
            ("cold, warm caches, above the base (dream: Debian layer already in the store)", secs(d["cold_above"]),
             secs(k["cold_warm"]), ratio(k["cold_warm"], d["cold_above"])),
            (f"no-op (median of {n})", secs(d["noop"]), secs(k["noop"]), ratio(k["noop"], d["noop"])),
            (f"one-file app change (median of {n})", secs(d["change"]), secs(k["change"]), ratio(k["change"], d["change"])),
            ("one-file app change + `doit load` (median)", secs(d["change_load"]), secs(k["change"]),
             ratio(k["change"], d["change_load"])),
            (f"add `{self.work.added}`: build", secs(d["add_build"]), secs(k["add_build"]), ratio(k["add_build"], d["add_build"])),
            (f"add `{self.work.added}`: lock + build", secs(add_total), secs(k["add_build"]), ratio(k["add_build"], add_total)),
            (f"add `{self.work.added}`: layers changed",
             f"{len(changed)} of {len(res.after)} ({', '.join(x.name for x in changed)})",
             f"{len(d_changed)} of {len(res.docker_after)}", "n/a"),
            (f"add `{self.work.added}`: bytes to push (dream: new gzip blobs; docker: changed layers, uncompressed)",
             f"{gz:,} B of {gz_total:,}", f"{d_bytes:,} B of {d_total:,}", ratio(d_bytes, gz)),
            (f"add `{self.work.added}`: file bytes changed (Docker's Size)", f"{files:,} B", f"{d_bytes:,} B",
             ratio(d_bytes, files)),
            (f"first `{self.work.imports}` in a new container (median of {n})", secs(d["import"]), secs(k["import"]),
             ratio(k["import"], d["import"])),
            ("`doit load`, first", f"{secs(d['load_first'])} ({res.text['load_first']})", not_docker, "n/a"),
            (f"`doit load` after the one-file change (median of {n})",
             f"{secs(d['load_change'])} ({res.text['load_change']})", not_docker, "n/a"),
            (f"biggest layer `{res.text['big']}`: throughput / ISA-L gzip-1 limit",
             f"{dream_rate / MB:,.0f} / {gzip_rate / MB:,.0f} MB/s = {dream_rate / gzip_rate:.2f}",
             "n/a (compressed at push)", "n/a"),
        ]
        lines = [f"**`{IMAGE}`** ({'SMOKE: six instead of torch, ' if self.work.smoke else ''}wall seconds, "
                 "`time.perf_counter` around each command, process start-up included; "
                 "docker: `DOCKER_BUILDKIT=0 docker build --network host`; ratio docker/dream, above 1: dream is faster)", ""]
        lines += table(("scenario", "dream", "docker build", "docker/dream"), rows) + [""]
        res.notes.append(f"biggest layer `{res.text['big']}`: {big['tar']:,.0f} B of tar, gzip blob {big['blob']:,.0f} B; "
                         f"`doit layer:{IMAGE}/{res.text['big']}` into a fresh store {big['seconds']:.2f} s "
                         f"(process start-up included); limits on the same tar in memory, one core, "
                         f"1 MiB chunks, best of 3: isal gzip-1 {big['gzip']:.2f} s ({big['gzip_bytes']:,.0f} B out), "
                         f"sha256 {big['sha256']:.2f} s ({big['tar'] / big['sha256'] / MB:,.0f} MB/s), gzip + both "
                         f"hashes {big['pipeline']:.2f} s ({pipe_rate / MB:,.0f} MB/s; dream reaches "
                         f"{dream_rate / pipe_rate:.2f} of it); isal inflate of the layer's blob (its big files "
                         f"are the wheels' deflate streams) {big['inflate']:.2f} s "
                         f"({big['tar'] / big['inflate'] / MB:,.0f} MB/s of tar: dream reaches "
                         f"{dream_rate * big['inflate'] / big['tar']:.2f} of it)")
        res.notes.append("dream's layers changed by the added requirement: " + "; ".join(
            f"{x.name} {x.size:,} B gzip, {x.tar:,} B tar, {x.files:,} B of files" for x in changed))
        res.notes.append("docker's layers changed: " + "; ".join(
            f"{short(step_name(by))} {sz:,} B" for _, sz, by in d_changed))
        return lines


def leftovers(env: dict[str, str]) -> None:
    """Refuse to start over an image of our names that someone else made; remove what an earlier
    run left (our names, and any image carrying our label: a first load must find none of it)."""
    labelled = run(["docker", "images", "-a", "-q", "--filter", f"label={LABEL}"], check=False).output.split()
    for image in dict.fromkeys(labelled):
        say(f"bench: removing image {image} (label {LABEL}), left by an earlier run")
        run(["docker", "rmi", "-f", image], env=env, check=False)
    refs = [f"{IMAGE}:latest", BASE_TAG, f"{PEER}:v1", f"{PEER}:v2", f"{PEER}:empty"]
    for ref in refs:
        found = run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref], check=False)
        if found.rc != 0:
            continue
        labels = json.loads(found.output.strip() or "null") or {}
        if ref.startswith(PEER) or labels.get(LABEL):
            say(f"bench: removing {ref}, left by an earlier run")
            run(["docker", "rmi", "-f", ref], env=env, check=False)
        else:
            raise SystemExit(f"bench: {ref} exists in Docker and is not this benchmark's; remove or rename it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--skip-empty-caches", action="store_true",
                        help="leave out the cold builds from empty download caches")
    parser.add_argument("--runs", type=int, default=3, help="runs of the repeated scenarios (default 3)")
    parser.add_argument("--smoke", action="store_true", help="six instead of torch: the whole flow in minutes")
    args = parser.parse_args()
    if shutil.which("docker") is None or run(["docker", "info"], check=False).rc != 0:
        raise SystemExit("bench: needs a running Docker engine")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the finally-blocks clean up

    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    root = out / f"torch-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir()
    info = facts()
    say("\n".join(info) + f"\nscratch: {root}\n")
    bench = Bench(root, Workload.of(args.smoke), max(1, args.runs), args.skip_empty_caches)
    problems: list[str] = []
    started = time.perf_counter()
    try:
        leftovers(bench.docker.env)
        bench.dream_side()
        bench.docker_side()
        lines = bench.report()
    finally:
        problems = bench.docker.cleanup(bench.base_loaded)
        if args.keep:
            say(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say("")
    say("\n".join(f"- {fact}" for fact in info))
    say(f"- the whole run took {time.perf_counter() - started:.0f} s")
    say("")
    say("\n".join(lines))
    for note in bench.res.notes + problems:
        say(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
