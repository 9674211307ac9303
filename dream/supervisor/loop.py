"""A small single-threaded event loop: readable pipes, timers, signals and calls posted from
probe threads, all woken through one self-pipe.

Why not asyncio: its child watchers wait on specific pids, while a PID 1 must reap every
child, orphans included, with ``waitpid(-1)``; doing both races (a probe's exit status could be
stolen). Here only the loop waits for children, and nothing else spawns any.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import selectors
import signal
import time
from collections.abc import Callable


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Timer]] = []
        self.counter = itertools.count()
        self.posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.signals: list[int] = []
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.selector.register(self.wake_read, selectors.EVENT_READ, None)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback)
        heapq.heappush(self.timers, (timer.when, next(self.counter), timer))
        return timer

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop's thread (safe to call from any thread)."""
        self.posted.put(callback)
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self.wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so the loop will wake anyway

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def catch_signals(self, numbers: list[int]) -> dict[int, object]:
        """Record these signals for `take_signals` and wake the loop; returns the old handlers."""
        old = {}
        for number in numbers:
            old[number] = signal.signal(number, self._on_signal)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        return old

    def _on_signal(self, number: int, frame: object) -> None:
        self.signals.append(number)

    def take_signals(self) -> list[int]:
        taken, self.signals = self.signals, []
        return taken

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for the next event (or timer) and handle what is ready."""
        while self.timers and self.timers[0][2].cancelled:
            heapq.heappop(self.timers)
        timeout = max_wait
        if self.timers:
            until = max(0.0, self.timers[0][0] - time.monotonic())
            timeout = until if timeout is None else min(timeout, until)
        try:
            events = self.selector.select(timeout)
        except InterruptedError:
            events = []
        for key, _ in events:
            if key.fd == self.wake_read:
                try:
                    while os.read(self.wake_read, 4096):
                        pass
                except BlockingIOError:
                    pass
            else:
                key.data()
        while True:
            try:
                callback = self.posted.get_nowait()
            except queue.Empty:
                break
            callback()
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.callback()

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.selector.close()
        os.close(self.wake_read)
        os.close(self.wake_write)
