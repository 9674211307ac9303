"""Push benchmark: dream's registry push against `skopeo copy`, same image, same registry.

Why: `doit push:<image>` streams the store's blobs to a registry with dream's own client
(dream/registry/push.py, client.py). skopeo is the standard tool for the same job, and it reads
dream's store directly (the store is a plain OCI image layout: ``oci:<store>:<name>``). Both push
the same bytes to the same kind of registry, so the comparison is wall time, throughput and
memory of the pushing process, plus whether both leave the same manifest in the registry.

    python bench/push_bench.py [--size-mb 1024] [--quick] [--runs 5] [--big-layers 1] [--keep]

Everything happens in ``bench/out/push-*`` (git-ignored, removed at the end unless --keep):
a dream project whose recipe has one big layer of incompressible data (``--size-mb``, os.urandom)
and three small ones, built by ``doit build`` into a scratch store; then, per run and tool, a
fresh Debian ``docker-registry`` (distribution 2.8, filesystem storage, plain http on a free
loopback port) receives a cold push (everything uploaded) and a re-push (nothing changed), and
is stopped and its storage removed. Tools are interleaved; each figure is the median of the runs.
See bench/README.md for what the figures do and do not mean.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IMAGE = "bench-push"                 # the recipe's image name = the store's tag
REPOSITORY = "bench/push"            # the repository both tools push to
REGISTRY = "/usr/bin/docker-registry"
MiB = 1 << 20
TOOLS = ("dream", "skopeo")
PUSHED = re.compile(r"^pushed \S+@(sha256:[0-9a-f]{64}): (.*)$", re.M)  # dream's PushReport line
REQUEST = re.compile(r'"(GET|HEAD|POST|PATCH|PUT|DELETE) /v2/[^"]*"')  # the access log
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

# The dream side runs in a child of its own (so its peak RSS is its own), through the same
# function `doit push:<image>` calls, without doit's task machinery (see dream_doit_push).
DREAM_CHILD = """
import sys
from pathlib import Path
from dream.registry.push import push_image
from dream.oci.reference import parse_reference
from dream.store import open_store
store_root, name, target = sys.argv[1:]
store = open_store(Path(store_root))
reference = parse_reference(target, "push target")
print(push_image(store, store.tagged(name), reference, [reference.tag]))
"""


# --------------------------------------------------------------------------- running commands

@dataclass
class Measure:
    """One measured command: wall seconds (time.perf_counter around it, process start-up
    included), CPU seconds and peak RSS of that one process (GNU time), its output."""

    seconds: float
    cpu_seconds: float
    rss_mib: float
    output: str = field(repr=False)
    registry_cpu_seconds: float = 0.0  # the registry's CPU time over the same interval


def measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Measure:
    """Run ``cmd`` under /usr/bin/time, which reports the child's own peak RSS (getrusage of
    the one child it waits for), not the maximum over every child this script ever had."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", report.name, *cmd], cwd=cwd,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
        user, system, rss_kib = report.read().split()[-3:]  # after a "Command exited…" line, if any
    return Measure(seconds, float(user) + float(system), int(rss_kib) / 1024, proc.stdout)


def output_of(cmd: list[str], **kwargs: Any) -> str:
    """An untimed helper command's stdout; a failure stops the benchmark with its output."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc.stdout


# --------------------------------------------------------------------------- the image

def write_random(path: Path, size: int) -> None:
    """``size`` bytes of os.urandom, written 1 MiB at a time: incompressible, so gzip cannot
    shrink the layer and the bytes pushed are the bytes generated; never whole in memory."""
    with open(path, "wb") as handle:
        left = size
        while left:
            piece = os.urandom(min(MiB, left))
            handle.write(piece)
            left -= len(piece)


def make_project(root: Path, size_mb: int, big_layers: int = 1, seed: int = 1) -> None:
    """A dream project with a files-only recipe: a layer of 200 small text files, the big
    random data (in ``big_layers`` layers of equal size), a small app layer and an inline
    config file (gzip, as the default recipes)."""
    payload = root / "recipes" / "payload"
    (payload / "small").mkdir(parents=True)
    shutil.copy2(REPO / "dodo.py", root / "dodo.py")
    rng = random.Random(seed)
    for index in range(200):
        words = (rng.choice(["alpha", "beta", "gamma", "delta", "layer", "blob"]) for _ in range(600))
        (payload / "small" / f"file_{index:03d}.txt").write_text(" ".join(words)[: rng.randint(1024, 4096)])
    big = {"data": "big.bin"} if big_layers == 1 else {f"data{n}": f"big{n}.bin" for n in range(big_layers)}
    for file in big.values():
        write_random(payload / file, size_mb * MiB // big_layers)
    write_random(payload / "seed.bin", 64 * 1024)
    recipe = {
        "image": {"name": IMAGE, "tags": ["latest"], "compression": "gzip", "cmd": ["/bin/sh"]},
        "layers": [
            {"name": "small", "files": [{"dest": "/opt/small", "src": "payload/small"}]},
            *({"name": layer, "files": [{"dest": f"/data/{file}", "src": f"payload/{file}"}]}
              for layer, file in big.items()),
            {"name": "app", "files": [{"dest": "/app/seed.bin", "src": "payload/seed.bin"},
                                      {"dest": "/app/main.py", "content": "print('hello')\n"}]},
            {"name": "config", "files": [{"dest": "/etc/bench.conf", "content": "mode = bench\n"}]},
        ],
    }
    # JSON is YAML, and needs no quoting by hand.
    (root / "recipes" / f"{IMAGE}.yaml").write_text(json.dumps(recipe, indent=1) + "\n")


@dataclass
class Image:
    """The built image as the store holds it: manifest digest and bytes, blob sizes."""

    digest: str
    manifest: bytes = field(repr=False)
    blobs: list[int]
    build_seconds: float

    @property
    def blob_bytes(self) -> int:
        return sum(self.blobs)


def build_image(project: Path, store: Path) -> Image:
    """`doit build:bench-push` into ``store``, then read the manifest back from index.json."""
    env = {**os.environ, "DREAM_STORE": str(store), "DREAM_LAYER_CACHE": "off"}
    start = time.perf_counter()
    output_of([sys.executable, "-m", "doit", f"build:{IMAGE}"], cwd=project, env=env)
    seconds = time.perf_counter() - start
    index = json.loads((store / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == IMAGE)
    data = (store / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    body = json.loads(data)
    return Image(entry["digest"], data, [b["size"] for b in [body["config"], *body["layers"]]], seconds)


# --------------------------------------------------------------------------- the registry

def free_port() -> int:
    """A loopback port nobody listens on now (the registry binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Registry:
    """Debian's distribution 2.8 registry on a fresh port with fresh filesystem storage.

    A fresh port per run also makes the run's host name new, so neither tool can mount a blob
    from, or trust a cache entry about, an earlier run's registry: each cold push uploads all."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Registry:
        self.root.mkdir(parents=True)
        config = self.root / "config.yml"
        config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "warn"},  # access log on: it counts each push's requests
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "cache": {"blobdescriptor": "inmemory"}},
            "http": {"addr": self.host, "secret": "push-bench"},
        }, indent=1))
        with open(self.root / "registry.log", "wb") as log:
            self.proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        log = (self.root / "registry.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the registry on {self.host} did not come up:\n{log}")

    def stop(self) -> None:
        """Terminate, then kill if it lingers; only the one process this object started."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cpu_seconds(self) -> float:
        """The registry's user + system CPU time so far (/proc/PID/stat, clock ticks): the
        server's share of a push, which runs on the same cores as the client."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self) -> int:
        return (self.root / "registry.log").stat().st_size

    def requests_since(self, offset: int) -> str:
        """The API requests the access log shows after ``offset``, by method ("HEAD 5, PUT 6")."""
        with open(self.root / "registry.log", "rb") as log:
            log.seek(offset)
            methods = REQUEST.findall(log.read().decode(errors="replace"))
        return ", ".join(f"{m} {methods.count(m)}" for m in sorted(set(methods))) or "none"

    def manifest(self, tag: str = "latest") -> tuple[str, str]:
        """sha256 of the manifest bytes the registry serves, and its Docker-Content-Digest."""
        request = urllib.request.Request(f"http://{self.host}/v2/{REPOSITORY}/manifests/{tag}",
                                         headers={"Accept": MANIFEST_ACCEPT})
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = answer.read()
            return "sha256:" + hashlib.sha256(data).hexdigest(), answer.headers.get("Docker-Content-Digest", "")


# --------------------------------------------------------------------------- the two tools

@dataclass
class Scratch:
    """Where everything lives; one directory, removed at the end unless --keep."""

    root: Path

    @property
    def project(self) -> Path: return self.root / "project"
    @property
    def store(self) -> Path: return self.root / "store"
    @property
    def policy(self) -> Path: return self.root / "policy.json"


def push_command(tool: str, scratch: Scratch, target: str) -> list[str]:
    """The one command whose process is measured. skopeo gets its own trust policy (accept
    anything: nothing is signed here) instead of /etc/containers/policy.json."""
    if tool == "dream":
        return [sys.executable, "-c", DREAM_CHILD, str(scratch.store), IMAGE, target]
    return ["skopeo", "--policy", str(scratch.policy), "copy", "--dest-tls-verify=false",
            "--digestfile", str(scratch.root / "skopeo.digest"),
            f"oci:{scratch.store}:{IMAGE}", f"docker://{target}"]


def dream_said(output: str) -> tuple[str, str]:
    """The manifest digest and the blob counts from dream's "pushed …" report line."""
    match = PUSHED.search(output)
    if match is None:
        raise RuntimeError(f"dream's push printed no report line:\n{output[-2000:]}")
    return match.group(1), match.group(2)


def push_once(registry: Registry, tool: str, command: list[str]) -> tuple[Measure, str]:
    """One measured push, after a sync (no earlier run's writeback competes with it), and what
    it did: dream's own report line, and for both the requests the registry saw."""
    os.sync()
    offset, cpu = registry.log_size(), registry.cpu_seconds()
    result = measured(command)
    time.sleep(0.05)  # the registry logs a request just after answering it
    result.registry_cpu_seconds = registry.cpu_seconds() - cpu
    said = f"{dream_said(result.output)[1]}; " if tool == "dream" else ""
    return result, f"{said}requests {registry.requests_since(offset)}"


def skopeo_inspect(target: str) -> str:
    """The digest skopeo computes for what the registry serves under ``target``."""
    text = output_of(["skopeo", "inspect", "--tls-verify=false", f"docker://{target}"])
    return json.loads(text)["Digest"]


@dataclass
class RunResult:
    """One tool's run against one fresh registry."""

    tool: str
    cold: Measure
    again: Measure
    registry_digest: str
    served_digest: str
    inspect_digest: str
    tool_digest: str
    cold_summary: str
    again_summary: str


def one_run(tool: str, scratch: Scratch, index: int) -> RunResult:
    """Fresh registry, cold push, digests, re-push of the unchanged image, registry stopped."""
    shutil.rmtree(scratch.store / "dream" / "sources", ignore_errors=True)  # dream's memory of pushes
    with Registry(scratch.root / f"registry-{index}-{tool}") as registry:
        target = f"{registry.host}/{REPOSITORY}:latest"
        command = push_command(tool, scratch, target)
        cold, cold_summary = push_once(registry, tool, command)
        served, header = registry.manifest()
        inspected = skopeo_inspect(target)
        tool_digest = (dream_said(cold.output)[0] if tool == "dream"
                       else (scratch.root / "skopeo.digest").read_text().strip())
        again, again_summary = push_once(registry, tool, command)
    return RunResult(tool, cold, again, header, served, inspected, tool_digest, cold_summary, again_summary)


def dream_import_floor() -> float:
    """Seconds to start Python and import what the dream child imports (median of 3): the
    fixed cost in every dream figure that skopeo, a Go binary, does not pay."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        output_of([sys.executable, "-c", "import dream.registry.push, dream.store"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dream_doit_push(scratch: Scratch) -> Measure:
    """`doit push:bench-push --to …` once, cold, for comparison with the child: the same push
    plus doit, the recipe loading and the up-to-date check of its `build:` dependency."""
    with Registry(scratch.root / "registry-doit") as registry:
        shutil.rmtree(scratch.store / "dream" / "sources", ignore_errors=True)
        env = {**os.environ, "DREAM_STORE": str(scratch.store), "DREAM_LAYER_CACHE": "off"}
        os.sync()
        return measured([sys.executable, "-m", "doit", f"push:{IMAGE}", "--to",
                         f"{registry.host}/{REPOSITORY}:latest"], env=env, cwd=scratch.project)


# --------------------------------------------------------------------------- report

@dataclass
class Row:
    """One line of the table: both tools' medians and which direction is better."""

    metric: str
    unit: str
    values: dict[str, float]
    better: str  # "lower" or "higher"

    def advantage(self) -> float:
        """How many times better dream is (below 1: worse)."""
        d, s = self.values["dream"], self.values["skopeo"]
        return s / d if self.better == "lower" else d / s


def rows_from(results: list[RunResult], blob_bytes: int) -> list[Row]:
    """The medians over each tool's runs; throughput is the image's blob bytes over wall time."""
    def median(tool: str, pick: Callable[[RunResult], float]) -> float:
        return statistics.median(pick(r) for r in results if r.tool == tool)

    def row(metric: str, unit: str, pick: Callable[[RunResult], float], better: str = "lower") -> Row:
        return Row(metric, unit, {t: median(t, pick) for t in TOOLS}, better)

    mb = blob_bytes / 1e6
    return [
        row("cold push: wall time", "s", lambda r: r.cold.seconds),
        row("cold push: throughput (blob bytes / wall)", "MB/s", lambda r: mb / r.cold.seconds, "higher"),
        row("cold push: CPU time of the pushing process", "s", lambda r: r.cold.cpu_seconds),
        row("cold push: peak RSS of the pushing process", "MiB", lambda r: r.cold.rss_mib),
        row("cold push: CPU time of the registry", "s", lambda r: r.cold.registry_cpu_seconds),
        row("re-push, nothing changed: wall time", "s", lambda r: r.again.seconds),
        row("re-push, nothing changed: CPU time", "s", lambda r: r.again.cpu_seconds),
        row("re-push, nothing changed: peak RSS", "MiB", lambda r: r.again.rss_mib),
    ]


def print_table(rows: list[Row]) -> None:
    head = (f"| {'metric':<43} | {'unit':<4} | {'dream':>8} | {'skopeo':>8} | skopeo/dream | better "
            f"| dream better by |")
    print(head + "\n|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        d, s = r.values["dream"], r.values["skopeo"]
        fmt = ",.0f" if r.unit == "MB/s" else ".1f" if r.unit == "MiB" else ".2f"
        print(f"| {r.metric:<43} | {r.unit:<4} | {d:>8{fmt}} | {s:>8{fmt}} | {s / d:>12.2f} "
              f"| {r.better:>6} | {r.advantage():>13.2f} x |")


def digest_notes(results: list[RunResult], image: Image) -> list[str]:
    """Whether every registry holds the store's manifest, tool by tool, said plainly."""
    notes = []
    for tool in TOOLS:
        mine = [r for r in results if r.tool == tool]
        seen = sorted({d for r in mine for d in (r.registry_digest, r.served_digest, r.inspect_digest, r.tool_digest)})
        same = seen == [image.digest]
        notes.append(f"{tool}: manifest digest in the registry "
                     f"{'= the store manifest digest' if same else '!= the store digest'} "
                     f"{image.digest[:19]}… in all {len(mine)} runs (registry header, sha256 of the served "
                     f"bytes, `skopeo inspect`, the tool's own report)"
                     + ("" if same else f"; seen: {', '.join(seen)}"))
    return notes


def measure_all(scratch: Scratch, runs: int) -> list[RunResult]:
    """``runs`` rounds, each tool once per round, the order alternating (so neither always
    goes first after the other's writeback, or on a warmer page cache)."""
    results: list[RunResult] = []
    for index in range(runs):
        for tool in (TOOLS if index % 2 == 0 else TOOLS[::-1]):
            r = one_run(tool, scratch, index)
            results.append(r)
            print(f"run {index + 1}/{runs} {tool:<6} cold {r.cold.seconds:6.2f} s cpu {r.cold.cpu_seconds:5.2f} s "
                  f"(registry {r.cold.registry_cpu_seconds:5.2f} s) rss {r.cold.rss_mib:6.1f} MiB "
                  f"[{r.cold_summary}] | again {r.again.seconds:5.2f} s rss {r.again.rss_mib:5.1f} MiB "
                  f"[{r.again_summary}]", flush=True)
    return results


def without_output(measure: Measure) -> dict[str, float]:
    return {k: v for k, v in asdict(measure).items() if k != "output"}


def report(results: list[RunResult], image: Image, floor: float, via_doit: Measure,
           facts: dict[str, Any], out: Path) -> None:
    """Print the table and the notes; write all of it, every run included, to ``out``."""
    rows = rows_from(results, image.blob_bytes)
    print(f"\n{facts['runs']} runs per tool, interleaved, medians; {image.blob_bytes / 1e6:,.1f} MB of "
          f"blobs (MB = 10^6 bytes); nproc {facts['nproc']}\n")
    print_table(rows)
    notes = [*digest_notes(results, image),
             (f"dream start-up floor (Python + `import dream.registry.push, dream.store`): {floor:.2f} s, "
              "included in every dream figure"),
             (f"dream via `doit push:{IMAGE} --to …` (once, cold): {via_doit.seconds:.2f} s, "
              f"{via_doit.rss_mib:.1f} MiB peak RSS (doit, recipe loading, the up-to-date check of "
              f"build:{IMAGE})")]
    print()
    for note in notes:
        print(f"- {note}")
    data = {**facts, "image": {**asdict(image), "manifest": image.manifest.decode()},
            "table": [{**asdict(r), "dream_better_by": r.advantage()} for r in rows], "notes": notes,
            "raw": [{**asdict(r), "cold": without_output(r.cold), "again": without_output(r.again)}
                    for r in results]}
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"written {out.relative_to(REPO)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=None, help="big data, MiB of random bytes (default 1024)")
    parser.add_argument("--quick", action="store_true", help="200 MiB of big data (unless --size-mb) and 2 runs")
    parser.add_argument("--big-layers", type=int, default=1,
                        help="split the big data into this many layers (default 1), to see parallel uploads")
    parser.add_argument("--runs", type=int, default=None, help="runs per tool, interleaved (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    size_mb = args.size_mb or (200 if args.quick else 1024)
    runs = args.runs or (2 if args.quick else 5)
    for tool in (REGISTRY, "skopeo", "/usr/bin/time"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally-blocks stop the registry

    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    scratch = Scratch(out / f"push-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    scratch.root.mkdir()
    facts = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
             "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
             "skopeo": output_of(["skopeo", "--version"]).split()[-1],
             "registry": output_of([REGISTRY, "--version"]).split()[-1],
             "size_mb": size_mb, "big_layers": args.big_layers, "runs": runs}
    print(f"scratch: {scratch.root}\nmachine: nproc {facts['nproc']}, {facts['cpu']}, Python {facts['python']}, "
          f"skopeo {facts['skopeo']}, docker-registry {facts['registry']}", flush=True)
    try:
        make_project(scratch.project, size_mb, args.big_layers)
        scratch.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        image = build_image(scratch.project, scratch.store)
        print(f"image {IMAGE}: {image.digest}, {len(image.blobs)} blobs, {image.blob_bytes:,} bytes "
              f"(largest {max(image.blobs):,}), built in {image.build_seconds:.1f} s\n", flush=True)
        results = measure_all(scratch, runs)
        floor = dream_import_floor()
        via_doit = dream_doit_push(scratch)
    finally:
        if args.keep:
            print(f"\nkept {scratch.root}")
        else:
            shutil.rmtree(scratch.root, ignore_errors=True)
    report(results, image, floor, via_doit, facts, out / "push.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
