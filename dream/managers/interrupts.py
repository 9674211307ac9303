"""Ctrl-C while a manager runs a deployment, the same for every manager that stays in the
foreground (compose, podman, systemd): SIGTERM and SIGHUP to dream are Ctrl-C too, and the way
down is let finish through further Ctrl-Cs, since stopping half way leaves containers, pods or
units behind."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def through_interrupts(action: Callable[[], int]) -> int:
    """Run ``action`` (a wait, a ``down``) to its end even through Ctrl-C; its result."""
    while True:
        try:
            return action()
        except KeyboardInterrupt:
            print("dream: still taking the deployment down", file=sys.stderr, flush=True)


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP to dream are Ctrl-C inside the block: a stopped ``doit``, or a closed
    terminal (whose SIGHUP reaches only dream when the tool runs in a group of its own), takes
    the deployment down. Only the main thread may set a handler, and only a run in it owns the
    process: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
