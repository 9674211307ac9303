"""Layer compression benchmark (issue 14): dream's layer writer against ISA-L gzip-1's limit.

Run from the repository root:   python bench/compress_bench.py [--rounds 3] [--keep]

The workload is the biggest layer of the reference GPU image: the cuBLAS wheel from dream's
download cache (``~/.cache/dream/wheels/*/nvidia_cublas_cu12-*.whl``), unzipped into
``bench/out/compress-*`` (git-ignored, removed at the end unless ``--keep``) and written as one
layer by `dream.oci.layer.build_layer` into a scratch store. Measured in one run, on this
machine, every timing the best of ``--rounds`` rounds, the rounds interleaved so all rows see
the same load:

1. limits on the same tar bytes, in memory, one core: ISA-L gzip-1 as one stream (the
   compressor's limit) and sha256;
2. member sizes (256 KiB – 8 MiB): blob size against one stream, one core and all cores;
3. peers on the tar as a file: ``pigz -1`` (all cores) and ``gzip -1``, when installed;
4. dream: the one-stream writer of before issue 14 (re-created here), ``build_layer`` with a
   1-thread pool and with the default shared pool; zstd (level 3, threads inside zstd) against
   its own limit and against the one-thread loop it had.

Prints markdown tables; the fraction is dream's MB/s of tar over ISA-L's one-core limit, and CPU
seconds (user + system, every thread) say what a row costs whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import isal  # noqa: E402
import zstandard  # noqa: E402
from isal import isal_zlib  # noqa: E402

from dream.oci.compress import CODECS, MEMBER, gzip_member, usable_cores  # noqa: E402
from dream.oci.layer import build_layer  # noqa: E402
from dream.oci.tar import tar_chunks  # noqa: E402
from dream.oci.tree import FILE, Entry, Tree  # noqa: E402
from dream.store import Store  # noqa: E402

MB = 1e6
STEP = 1 << 20
T = TypeVar("T")
SIZES = [256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20]


def say(text: str) -> None:
    print(text, flush=True)


def cublas_wheel() -> Path:
    cache = Path(os.environ.get("DREAM_CACHE", Path.home() / ".cache" / "dream"))
    wheels = sorted(cache.glob("wheels/*/nvidia_cublas_cu12-*.whl"))
    if not wheels:
        raise SystemExit(f"bench: no cuBLAS wheel under {cache}/wheels; build gpu-image once first")
    return wheels[-1]


def unpacked_tree(wheel: Path, root: Path) -> Tree:
    """The wheel's files as a layer tree (regular files read from ``root``, as builders do)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root)
    tree = Tree("bench/cublas")
    for path in sorted(root.rglob("*")):
        if path.is_file():
            tree.add(Entry(str(path.relative_to(root)), FILE, 0o644, size=path.stat().st_size, source=path))
    return tree


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's threads and its finished children."""
    now = os.times()
    return now.user + now.system + now.children_user + now.children_system


class Best:
    """Best-of-rounds wall seconds per named measurement, with the CPU seconds of that round."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def time(self, name: str, work: Callable[[], T]) -> T:
        start, cpu = time.perf_counter(), cpu_seconds()
        result = work()
        took = time.perf_counter() - start
        if took < self.seconds.get(name, float("inf")):
            self.seconds[name], self.cpu[name] = took, cpu_seconds() - cpu
        return result


# --------------------------------------------------------------------------- what is timed

def isal_stream(data: bytes) -> int:
    """Bytes out of ISA-L gzip-1 as one stream, fed 1 MiB at a time (the writer of before)."""
    view, comp, size = memoryview(data), isal_zlib.compressobj(1, zlib.DEFLATED, 31), 0
    for i in range(0, len(view), STEP):
        size += len(comp.compress(view[i:i + STEP]))
    return size + len(comp.flush())


def sha256_of(data: bytes) -> None:
    digest, view = hashlib.sha256(), memoryview(data)
    for i in range(0, len(view), STEP):
        digest.update(view[i:i + STEP])


def members(data: bytes, size: int, pool: ThreadPoolExecutor) -> int:
    """Bytes out of gzip members of ``size`` compressed in ``pool`` (the compression alone)."""
    view = memoryview(data)
    return sum(map(len, pool.map(gzip_member, (view[i:i + size] for i in range(0, len(view), size)))))


def zstd_limit(data: bytes) -> int:
    comp, view, size = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=False).compressobj(), memoryview(data), 0
    for i in range(0, len(view), STEP):
        size += len(comp.compress(view[i:i + STEP]))
    return size + len(comp.flush())


def one_stream_layer(tree: Tree, store: Store, zstd: bool = False) -> int:
    """The layer writer of before issue 14, in one thread: tar → sha256 → compressor → blob."""
    comp = (zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=False).compressobj() if zstd
            else isal_zlib.compressobj(1, zlib.DEFLATED, 31))
    diff_id = hashlib.sha256()
    with store.blob_writer() as blob:
        for chunk in tar_chunks(tree.sorted_entries(), 0, tree.label):
            diff_id.update(chunk)
            blob.write(comp.compress(chunk))
        blob.write(comp.flush())
        return blob.commit()[1]


def peer(cmd: list[str], tar_file: Path) -> None:
    with open(tar_file, "rb") as source:
        subprocess.run(cmd, stdin=source, stdout=subprocess.DEVNULL, check=True)


# --------------------------------------------------------------------------- report

def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def facts() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"machine: nproc {os.cpu_count()}, usable cores {usable_cores()}, {cpu}; load average {load}",
            f"Python {sys.version.split()[0]}, isal {isal.__version__}, zstandard {zstandard.__version__}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    root = REPO / "bench" / "out" / f"compress-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir(parents=True)
    info = facts()
    say("\n".join(info) + f"\nscratch: {root}\n")
    try:
        lines = benchmark(root, args.rounds)
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say("\n".join(f"- {fact}" for fact in info) + "\n")
    say("\n".join(lines))
    return 0


def benchmark(root: Path, rounds: int) -> list[str]:
    wheel = cublas_wheel()
    tree = unpacked_tree(wheel, root / "tree")
    data = b"".join(tar_chunks(tree.sorted_entries(), 0, tree.label))
    tar_file = root / "layer.tar"
    tar_file.write_bytes(data)
    say(f"{wheel.name}: {len(tree.entries)} files, {len(data):,} B of tar")
    best, sizes = Best(), dict[str, int]()
    cores = usable_cores()
    one, every = ThreadPoolExecutor(1), ThreadPoolExecutor(cores)
    store = Store(root / "store").init()

    def layer(name: str, work: Callable[[], int]) -> None:
        sizes[name] = best.time(name, work)
        for blob in store.blobs.iterdir():
            blob.unlink()  # a fresh store for every build: nothing deduplicated

    for round_ in range(rounds):
        say(f"round {round_ + 1} of {rounds}")
        sizes["isal"] = best.time("isal", lambda: isal_stream(data))
        best.time("sha256", lambda: sha256_of(data))
        for size in SIZES:
            sizes[f"m{size}"] = best.time(f"m{size}/1", lambda: members(data, size, one))
            best.time(f"m{size}/n", lambda: members(data, size, every))
        sizes["zstd"] = best.time("zstd", lambda: zstd_limit(data))
        layer("old", lambda: one_stream_layer(tree, store))
        layer("dream/1", lambda: build_layer(tree, CODECS["gzip"], 0, store, pool=one).size)
        layer("dream", lambda: build_layer(tree, CODECS["gzip"], 0, store).size)
        layer("zstd/old", lambda: one_stream_layer(tree, store, zstd=True))
        layer("zstd/dream", lambda: build_layer(tree, CODECS["zstd"], 0, store).size)
        if round_ == 0:  # the peers are slow and not what is being tuned: once
            for cmd in (["pigz", "-1"], ["gzip", "-1"]):
                if shutil.which(cmd[0]):
                    best.time(cmd[0], lambda: peer(cmd, tar_file))
    one.shutdown()
    every.shutdown()
    return report(len(data), best, sizes, cores)


def report(tar: int, best: Best, sizes: dict[str, int], cores: int) -> list[str]:
    seconds = best.seconds
    limit = tar / seconds["isal"]

    def rate(name: str) -> tuple[str, str, str, str]:
        speed = tar / seconds[name]
        return f"{seconds[name]:.2f}", f"{best.cpu[name]:.2f}", f"{speed / MB:,.0f}", f"{speed / limit:.2f}"

    stream = sizes["isal"]
    lines = [f"**Member size** (ISA-L gzip-1, each member alone; the cuBLAS tar, {tar:,} B; "
             f"one stream: {stream:,} B; compression only, in memory, no hashing)", ""]
    rows: list[tuple[str, ...]] = []
    for size in SIZES:
        out = sizes[f"m{size}"]
        rows.append((f"{size >> 10} KiB" + (" (dream)" if size == MEMBER else ""), f"{out:,}",
                     f"{100 * (out - stream) / stream:+.3f} %", rate(f"m{size}/1")[2], rate(f"m{size}/n")[2],
                     rate(f"m{size}/n")[3]))
    lines += table(("member", "blob B", "vs one stream", "MB/s, 1 thread", f"MB/s, {cores} threads",
                    "fraction of the limit"), rows) + [""]
    lines += [f"**The cuBLAS layer** (MB/s of tar; dream: `build_layer` into a scratch store, tar "
              f"read from the page cache, both sha256s and the blob write included; limits: in "
              f"memory, one core; {cores} usable cores)", ""]
    rows = [("ISA-L gzip-1, one stream (the limit)", *rate("isal")),
            ("hashlib.sha256", *rate("sha256")),
            ("before issue 14: one stream, one thread", *rate("old")),
            ("dream gzip members, pool of 1 thread", *rate("dream/1")),
            (f"dream gzip members, shared pool ({cores} threads)", *rate("dream"))]
    for name, label in (("pigz", f"`pigz -1` ({cores} threads, tar from a file)"),
                        ("gzip", "`gzip -1` (tar from a file)")):
        rows.append((label, *rate(name)) if name in seconds else (label, "not installed", "", "", ""))
    rows += [("zstd-3 threaded, in memory (zstd's own limit)", *rate("zstd")),
             ("zstd before: one thread around zstd's threads", *rate("zstd/old")),
             ("dream zstd, pipelined", *rate("zstd/dream"))]
    lines += table(("what", "wall s", "CPU s", "MB/s of tar", "fraction of the ISA-L limit"), rows) + [""]
    lines.append(f"- blobs: gzip members {sizes['dream']:,} B, one stream {sizes['old']:,} B; zstd "
                 f"{sizes['zstd/dream']:,} B (before: {sizes['zstd/old']:,} B)")
    return lines


if __name__ == "__main__":
    sys.exit(main())
