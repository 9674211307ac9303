"""One fetch plan per image: the downloads of all its layers start at once, in the background.

A layer task used to download its own files (one ``pip download``, one ``apt-get download``)
when it started, so a cold build fetched one layer's files after another. Now the first layer
task of an image that builds anything asks its `FetchPlan` to `start`: every file that the
image's layers still to build need, and that the download cache lacks, starts downloading,
in batches, at most `AT_ONCE` downloader runs at a time. Each layer then `wait`\\ s for exactly
its own files; a layer whose files are in the cache waits for nothing.

- **Batches.** Files of sources with the same ``batch`` (pip with one target, apt with one
  architecture and suite) share a run. Where a source ``splits``, a file of `BIG` bytes or more
  gets a run of its own (pip fetches the files of one run one after the other, so one big wheel
  would hold the small ones back); apt pipelines a run's requests itself, and several runs at
  once were slower than one.
- **One download per file.** A file in flight, for this image or another one built in the same
  command, is waited for, not downloaded again (`_IN_FLIGHT`, by sha256).
- **Failures.** A run that fails for the files of several layers is retried as one run per
  layer, so each layer reports its own failure (the downloader's one line) and no other layer
  does; what a run fetched is verified and moved into the cache by the source, nothing
  half-written is left there.
- **Ctrl-C.** `stop` terminates every downloader child (`run_download`), lets the runs
  unwind (their scratch directories are removed) and cancels those not begun. Children die
  with dream (`die_with_parent`) if it is killed outright.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dream.download_cache import die_with_parent
from dream.errors import DreamError

if TYPE_CHECKING:  # concurrent.futures (and logging under it) only when something downloads
    from concurrent.futures import Future

BIG = 64_000_000
"""Bytes from which a file gets a run of its own. pip is CPU-bound here: about 0.7 s of CPU to
start a run, then about 7 ms per MB (cuBLAS, 581 MB: 5.5 s, 3.9 s of CPU), so a run of its own
pays once a file takes longer than the start. (gpu-image built as fast with 200 MB.)"""
AT_ONCE = 4
"""Downloader runs at a time, for the whole process. gpu-image's 828 MB of wheels took 7.4 s
4 at a time, 7.2 s 8 at a time, 8.6 s in one pip run; its whole plan (with the debs) 10.3 s 4
at a time and 16.4 s 2 at a time on a busy machine. On 2 cores more runs only add pip's CPU."""
POLL_S = 0.2  # a waiting layer thread wakes this often, so that Ctrl-C reaches it
UNWIND_S = 10.0  # how long `stop` waits for the runs to remove their scratch directories


@dataclass(frozen=True, eq=False)
class Source:
    """A downloader. ``fetch`` downloads some of its items, verified, into the download cache in
    one run and raises a `DreamError` that says what failed; ``present`` says whether the cache
    holds an item. Sources with equal ``batch`` fetch each other's items."""

    batch: Hashable
    fetch: Callable[[list[Any]], object]
    present: Callable[[Any], bool]
    splits: bool


@dataclass(frozen=True)
class Download:
    """One file a layer needs: ``key`` (its sha256) names it for every layer and image."""

    key: str
    size: int
    item: Any
    source: Source


_LOCK = threading.Lock()
_IN_FLIGHT: dict[str, Future[None]] = {}
_SLOTS = threading.Semaphore(AT_ONCE)
_RUNS: set[threading.Thread] = set()
_CHILDREN: set[subprocess.Popen[str]] = set()
_STOPPING = threading.Event()
_stoppers = 0  # threads in `stop`: the last one out accepts downloads again


class FetchPlan:
    """One image's downloads: started once (by whichever layer thread comes first), waited for
    per layer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._futures: dict[str, Future[None]] = {}

    def start(self, layers: Callable[[], Sequence[Callable[[], list[Download]]]]) -> None:
        """Start the downloads of ``layers`` (each: its files), once; later calls return when
        the first has started everything, so a layer's `wait` finds its files planned."""
        with self._lock:
            if self._started:
                return
            self._started = True
            needs = []
            for downloads in layers():
                try:
                    needs.append(downloads())
                except DreamError:
                    continue  # that layer fetches for itself, and reports it, when it builds
            self._futures = request(needs)

    def wait(self, downloads: list[Download]) -> None:
        """Return once these files are in the cache, or raise their download's failure; files
        this plan did not start (in the cache already, or no plan) are not waited for."""
        for download in downloads:
            future = self._futures.get(download.key)
            while future is not None:
                try:
                    future.result(timeout=POLL_S)
                    break
                except TimeoutError:
                    continue


def request(layers: list[list[Download]]) -> dict[str, Future[None]]:
    """Futures for the files of ``layers`` that the cache lacks: one in flight is shared, the
    others start now, in batches, the first layer's first."""
    from concurrent.futures import Future
    futures: dict[str, Future[None]] = {}
    new: list[tuple[int, Download]] = []
    with _LOCK:
        for index, downloads in enumerate(layers):
            for download in downloads:
                if download.key in futures:
                    continue
                if download.key in _IN_FLIGHT:  # looked up before the cache: see `_finish`
                    futures[download.key] = _IN_FLIGHT[download.key]
                elif not download.source.present(download.item):
                    futures[download.key] = _IN_FLIGHT[download.key] = Future()
                    new.append((index, download))
    for batch in batches(new):
        _launch(batch, futures)
    return futures


def batches(planned: list[tuple[int, Download]]) -> list[list[tuple[int, Download]]]:
    """``(layer index, file)`` pairs cut into runs (see the module docstring), in the order of
    the first layer each run serves."""
    groups: dict[Hashable, list[tuple[int, Download]]] = {}
    for pair in planned:
        groups.setdefault(pair[1].source.batch, []).append(pair)
    runs: list[list[tuple[int, Download]]] = []
    for group in groups.values():
        splits = group[0][1].source.splits
        alone = [[pair] for pair in group if splits and pair[1].size >= BIG]
        rest = [pair for pair in group if not (splits and pair[1].size >= BIG)]
        runs += alone + ([rest] if rest else [])
    return sorted(runs, key=lambda run: min(index for index, _ in run))


def _launch(batch: list[tuple[int, Download]], futures: dict[str, Future[None]]) -> None:
    thread = threading.Thread(target=_run, args=(batch, {d.key: futures[d.key] for _, d in batch}),
                              name="dream-download", daemon=True)
    with _LOCK:
        _RUNS.add(thread)
    thread.start()


def _run(batch: list[tuple[int, Download]], futures: dict[str, Future[None]]) -> None:
    """One downloader run in its own thread, once a slot is free. A failed run for several
    layers is retried per layer; the failure is set on the futures of the run that failed."""
    try:
        with _SLOTS:
            if _STOPPING.is_set():
                raise DreamError("downloads interrupted")
            source = batch[0][1].source
            source.fetch([download.item for _, download in batch])
        _finish(futures, None)
    except BaseException as exc:  # noqa: BLE001 (it belongs to the layers waiting for these files)
        layers = sorted({index for index, _ in batch})
        if len(layers) > 1 and not _STOPPING.is_set():
            for layer in layers:
                _launch([pair for pair in batch if pair[0] == layer], futures)
        else:
            _finish(futures, exc)
    finally:
        with _LOCK:
            _RUNS.discard(threading.current_thread())


def _finish(futures: dict[str, Future[None]], failure: BaseException | None) -> None:
    """Settle the futures, then forget them: a later request finds the file in the cache (the
    source moved it there before), or, after a failure, tries again."""
    for future in futures.values():
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)
    with _LOCK:
        for key, future in futures.items():
            if _IN_FLIGHT.get(key) is future:
                del _IN_FLIGHT[key]


def run_download(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` with output captured, for a downloader child that dies with dream and
    that `stop` terminates."""
    with _LOCK:
        if _STOPPING.is_set():
            raise DreamError("downloads interrupted")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=die_with_parent(), **options)
        _CHILDREN.add(process)
    try:
        with process:
            try:
                out, err = process.communicate()
            except BaseException:
                process.kill()
                raise
    finally:
        with _LOCK:
            _CHILDREN.discard(process)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@contextlib.contextmanager
def stopped_by_ctrl_c() -> Iterator[None]:
    """Around a layer's build: Ctrl-C there stops every download (`stop`) on its way out."""
    try:
        yield
    except KeyboardInterrupt:
        stop()
        raise


def stop() -> None:
    """Terminate the downloader children, let the runs unwind (scratch directories removed)
    and cancel the runs not begun; the last of the threads calling it (every layer thread that
    Ctrl-C interrupts) accepts downloads again."""
    global _stoppers
    with _LOCK:
        _stoppers += 1
        _STOPPING.set()
        for child in _CHILDREN:
            child.terminate()
        runs = list(_RUNS)
    try:
        deadline = time.monotonic() + UNWIND_S
        for run in runs:
            run.join(max(0.0, deadline - time.monotonic()))
    finally:
        with _LOCK:
            _stoppers -= 1
            if _stoppers == 0:
                _STOPPING.clear()
