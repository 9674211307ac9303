"""Progress bars for long steps: shown on a terminal, silent in CI and in pipes; and whole lines.

Layer tasks run at once in threads (`dream.project`), so both are shared by threads:

- every bar drawn at the same moment is one row of a single rich display (rich allows one live
  display at a time), started by the first bar and stopped when the last one ends;
- `install_line_output` makes ``sys.stdout``/``sys.stderr`` write whole lines only: each thread
  gathers its own partial line, and a finished line goes out in one write under one lock (above
  the bars while some are drawn), so ``image/layer: sha256:… (N bytes)`` lines never mix.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from rich.progress import Progress

_lock = threading.RLock()  # the shared display, and every line written out
_display: Progress | None = None  # the rich display while at least one bar is drawn
_bars = 0


def interactive() -> bool:
    """True when a person is watching: stderr is a terminal and CI is not set."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a rich bar on a terminal, does nothing otherwise. Bars of
    several threads at once are rows of one display."""
    if not interactive():
        yield lambda n: None
        return
    global _display, _bars
    with _lock:
        if _display is None:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn()]
            # rich writes to the stream under sys.stdout's LineWriter (through it, its refresh
            # thread would wait for `_lock` while holding the console's lock: a deadlock), and
            # redirects nothing: `_emit` prints finished lines above the bars itself
            console = Console(file=_underneath(sys.stdout))
            _display = Progress(*columns, console=console, transient=True,
                                redirect_stdout=False, redirect_stderr=False)
            _display.start()
        display = _display
        _bars += 1
        task = display.add_task(description, total=total)
    try:
        yield lambda n: display.advance(task, n)
    finally:
        with _lock:
            display.remove_task(task)
            _bars -= 1
            if _bars == 0:
                _display = None
                display.stop()


def _underneath(stream: Any) -> Any:
    """The stream below any `LineWriter` (and doit's capturing ``Writer``) over ``stream``."""
    for _ in range(8):
        if isinstance(stream, LineWriter):
            stream = stream.stream
        elif getattr(stream, "orig_stream", None) is not None:
            stream = stream.orig_stream
        else:
            break
    return stream


def _emit(stream: IO[str], text: str) -> None:
    """Write finished lines (``text`` ends in a newline, or is a flushed partial line) at once."""
    with _lock:
        display = _display
        if display is not None and display.console.is_terminal:
            from rich.text import Text
            display.console.print(Text(text.removesuffix("\n")), soft_wrap=True)
        else:
            stream.write(text)


class LineWriter:
    """A text stream over ``stream`` that writes whole lines only (see the module docstring);
    everything else (``fileno``, ``isatty``, ``buffer``, ``encoding``) is ``stream``'s."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._partial = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        pending = getattr(self._partial, "text", "") + text
        head, newline, tail = pending.rpartition("\n")
        self._partial.text = tail
        if newline:
            _emit(self.stream, head + newline)
        return len(text)

    def flush(self) -> None:
        pending = getattr(self._partial, "text", "")
        self._partial.text = ""
        if pending:
            _emit(self.stream, pending)
        with _lock:
            self.stream.flush()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)


def install_line_output() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in `LineWriter` (idempotent)."""
    if not isinstance(sys.stdout, LineWriter):
        sys.stdout = LineWriter(sys.stdout)
    if not isinstance(sys.stderr, LineWriter):
        sys.stderr = LineWriter(sys.stderr)


def whole_lines(stream: IO[str]) -> IO[str]:
    """``stream`` writing whole lines only (doit's reporter holds the original sys.stdout)."""
    return stream if isinstance(stream, LineWriter) else LineWriter(stream)  # type: ignore[return-value]
