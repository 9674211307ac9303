"""Load benchmark (issue 14): `doit load` as a pull from the store, against the archive paths and
against `docker pull` from a real registry, first load and after one layer changed.

Run from the repository root:   python bench/load_bench.py [--size-mb 256] [--layers 4] [--runs 3] [--keep]

Everything happens in ``bench/out/load-*`` (git-ignored, removed at the end unless --keep): a
dream project whose files-only recipe has ``--layers`` layers of incompressible data (os.urandom,
``--size-mb`` in all, so gzip cannot shrink them and bytes sent are bytes generated) under a
small app layer, built into a scratch store. Setup, not timed: the image is built (v1), the app
file changed and built again (v2: only the app layer differs); each version is pushed to a Debian
``docker-registry`` (distribution 2.8, plain http on a free loopback port) with ``skopeo copy``
(the same compressed blobs) and saved as a ``docker save`` archive.

dream's floor is timed too: ``doit load`` when the engine already holds the image (start-up and
up-to-date checks only), included in every dream figure.

Timed, wall seconds around each command (``time.perf_counter``, process start-up included),
``--runs`` times, tools interleaved, median reported:

- **first load**: the engine holds nothing of the image (every tag of v1 removed, so its layers
  are gone), then v1 goes in:
  - ``dream pull``: ``doit load:bench-load`` (the store served on 127.0.0.1, `docker pull`);
  - ``dream archive``: the same with ``DREAM_LOAD_VIA=archive`` (dream's old path: the whole
    image streamed into `docker load`, compressed layers as they are);
  - ``docker load``: ``docker load -i v1.tar`` (`docker save`'s archive: uncompressed layers);
  - ``docker pull``: ``docker pull`` of v1 from the registry.
- **one layer changed**: the engine holds v1 (kept under a tag of its own), not v2; then v2 goes
  in, by the same four commands (v2's tags are removed between tools, v1 stays).

dream's summary line says what it sent (``k of n layers sent, bytes``); that is the "bytes" column
for dream (the archive paths send the whole image every time). ``ratio`` is the peer's median over
``dream pull``'s: above 1, dream's pull is faster. One machine, one synthetic image: the ratios say
where the time goes, not more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
IMAGE = "bench-load"               # the recipe's image name, and the engine's repository
HOLD = "bench-load-hold:v1"        # keeps v1 in the engine during the "one layer changed" runs
REPOSITORY = "bench/load"          # the registry repository both versions are pushed to
REGISTRY = "/usr/bin/docker-registry"
MiB = 1 << 20
TOOLS = ("dream pull", "dream archive", "docker load", "docker pull")
SUMMARY = re.compile(r"^loaded .+ \((\d+) of (\d+) layers sent, ([\d,]+) bytes\)", re.M)


def say(text: str) -> None:
    print(text, flush=True)


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = run(cmd, cwd, env)
    return time.perf_counter() - start, proc.stdout


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            piece = os.urandom(min(MiB, left))
            handle.write(piece)
            left -= len(piece)


def make_project(root: Path, size_mb: int, layers: int) -> Path:
    payload = root / "recipes" / "payload"
    payload.mkdir(parents=True)
    shutil.copy2(REPO / "dodo.py", root / "dodo.py")
    for n in range(layers):
        write_random(payload / f"big{n}.bin", size_mb * MiB // layers)
    (payload / "main.py").write_text("print('v1')\n")
    recipe = {
        "image": {"name": IMAGE, "tags": ["latest"], "compression": "gzip", "cmd": ["/bin/sh"]},
        "layers": [*({"name": f"data{n}", "files": [{"dest": f"/data/big{n}.bin", "src": f"payload/big{n}.bin"}]}
                     for n in range(layers)),
                   {"name": "app", "files": [{"dest": "/app/main.py", "src": "payload/main.py"}]}],
    }
    (root / "recipes" / f"{IMAGE}.yaml").write_text(json.dumps(recipe, indent=1) + "\n")  # JSON is YAML
    return payload / "main.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Registry:
    """Debian's distribution 2.8 registry on a free loopback port (plain http, no auth)."""

    def __init__(self, root: Path) -> None:
        self.root, self.host = root, f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Registry":
        self.root.mkdir(parents=True)
        config = self.root / "config.yml"
        config.write_text(json.dumps({"version": 0.1, "log": {"level": "warn"},
                                      "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
                                      "http": {"addr": self.host, "secret": "load-bench"}}))
        with open(self.root / "registry.log", "wb") as log:
            self.proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"bench: the registry on {self.host} did not come up")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def image_id(reference: str) -> str | None:
    proc = run(["docker", "image", "inspect", "-f", "{{.Id}}", reference], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def drop(*ids: str | None) -> None:
    """Remove these images from the engine, every tag (their layers go with the last one)."""
    for found in ids:
        if found:
            run(["docker", "rmi", "-f", found], check=False)


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="random data in the image (default 256)")
    parser.add_argument("--layers", type=int, default=4, help="layers the data is cut into (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    for tool in ("docker", "skopeo", REGISTRY):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed")
    python = sys.executable
    root = REPO / "bench" / "out" / f"load-{os.getpid()}"
    project, store = root / "project", root / "store"
    env = {**os.environ, "DREAM_STORE": str(store), "DREAM_LAYER_CACHE": "off", "DREAM_LOAD_VIA": ""}
    archive_env = {**env, "DREAM_LOAD_VIA": "archive"}
    times: dict[tuple[str, str], list[float]] = {}
    sent: dict[tuple[str, str], str] = {}
    ids: dict[str, str] = {}
    info = json.loads(run(["docker", "info", "--format", "{{json .}}"]).stdout)
    try:
        app = make_project(project, args.size_mb, args.layers)
        say(f"machine: {platform.node()}, nproc {os.cpu_count()}, Docker {info.get('ServerVersion')}, "
            f"insecure registries {info.get('RegistryConfig', {}).get('InsecureRegistryCIDRs')}")
        say(f"image: {args.layers} layers of {args.size_mb // args.layers} MiB random data + an app layer; "
            f"scratch {root}")
        with Registry(root / "registry") as registry:
            for version in ("v1", "v2"):
                if version == "v2":
                    app.write_text("print('v2')\n")
                seconds, _ = timed([python, "-m", "doit", f"build:{IMAGE}"], project, env)
                say(f"setup: build {version} {seconds:.1f} s")
                run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{store}:{IMAGE}",
                     f"docker://{registry.host}/{REPOSITORY}:{version}"])
                run([python, "-m", "doit", f"load:{IMAGE}"], project, env)
                ids[version] = image_id(f"{IMAGE}:latest") or ""
                run(["docker", "save", "-o", str(root / f"{version}.tar"), f"{IMAGE}:latest"])
                drop(ids[version])
            pulled = {v: f"{registry.host}/{REPOSITORY}:{v}" for v in ("v1", "v2")}
            commands: dict[str, Callable[[str], tuple[list[str], dict[str, str] | None, Path | None]]] = {
                "dream pull": lambda v: ([python, "-m", "doit", f"load:{IMAGE}"], env, project),
                "dream archive": lambda v: ([python, "-m", "doit", f"load:{IMAGE}"], archive_env, project),
                "docker load": lambda v: (["docker", "load", "-q", "-i", str(root / f"{v}.tar")], None, None),
                "docker pull": lambda v: (["docker", "pull", "-q", pulled[v]], None, None),
            }

            def store_holds(version: str) -> None:
                """The store's tag at ``version`` (dream loads what the store has tagged)."""
                app.write_text(f"print('{version}')\n")
                run([python, "-m", "doit", f"build:{IMAGE}"], project, env)

            for index in range(args.runs):
                for scenario, version in (("first load", "v1"), ("one layer changed", "v2")):
                    store_holds(version)
                    for tool in TOOLS:
                        drop(ids["v1"], ids["v2"])
                        if scenario == "one layer changed":  # v1 in the engine, as its own tool put it there
                            cmd, cmd_env, cwd = commands[tool]("v1")
                            if tool.startswith("dream"):
                                store_holds("v1")
                            run(cmd, cwd, cmd_env)
                            run(["docker", "tag", ids["v1"], HOLD])
                            if tool.startswith("dream"):
                                store_holds("v2")
                        cmd, cmd_env, cwd = commands[tool](version)
                        seconds, out = timed(cmd, cwd, cmd_env)
                        if image_id(ids[version]) != ids[version]:
                            raise SystemExit(f"bench: {tool} did not leave {ids[version]} in the engine")
                        times.setdefault((scenario, tool), []).append(seconds)
                        if found := SUMMARY.search(out):
                            sent[(scenario, tool)] = f"{found[1]} of {found[2]} layers, {found[3]} bytes"
                        say(f"run {index + 1}: {scenario}, {tool}: {seconds:.2f} s")
                        if tool == "dream pull" and scenario == "first load":  # the floor: nothing to do
                            seconds, out = timed(cmd, cwd, cmd_env)
                            assert f"-- load:{IMAGE}" in out, out
                            times.setdefault(("floor", tool), []).append(seconds)
            drop(ids["v1"], ids["v2"])
            run(["docker", "rmi", HOLD], check=False)
    finally:
        drop(*ids.values())
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    total = sum(args.size_mb * MiB // args.layers for _ in range(args.layers))
    say("")
    say(f"**Load** ({args.size_mb} MiB image in {args.layers + 1} layers; wall seconds, median of {args.runs}; "
        "ratio = tool / dream pull, above 1: dream's pull is faster)")
    say("")
    rows: list[tuple[str, ...]] = []
    for scenario in ("first load", "one layer changed"):
        base = statistics.median(times[(scenario, "dream pull")])
        for tool in TOOLS:
            median = statistics.median(times[(scenario, tool)])
            moved = sent.get((scenario, tool), f"whole image, ~{total:,} bytes" if "load" in tool or "archive" in tool
                             else "only missing layers")
            rows.append((scenario, tool, f"{median:.2f} s", f"{min(times[(scenario, tool)]):.2f} s",
                         f"{median / base:.2f}" if tool != "dream pull" else "1.00", moved))
    for line in table(("scenario", "command", "median", "min", "ratio", "sent"), rows):
        say(line)
    say("")
    say(f"- dream's floor: `doit load:{IMAGE}` with the engine already holding the image (Python, doit, "
        f"recipes, the build's and the load's up-to-date checks): {statistics.median(times[('floor', 'dream pull')]):.2f} s "
        "median; every dream figure above includes it")


if __name__ == "__main__":
    main()
