"""Progress bars for long steps: shown on a terminal, silent in CI and in pipes."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator


def interactive() -> bool:
    """True when a person is watching: stderr is a terminal and CI is not set."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a rich bar on a terminal, does nothing otherwise."""
    if not interactive():
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
