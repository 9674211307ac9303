"""Prefixed, line-flushed output: ``12:00:01 web.1 | line``, like honcho, coloured on a terminal.

Writes go straight to file descriptor 1 with ``os.write``, so nothing is held in a Python
buffer (a supervised process's lines appear the moment they are complete) and a caller that
swapped ``sys.stdout`` (doit does) does not matter.
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO

_COLOURS = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94, 31, 91]
SYSTEM = "dream"


class Printer:
    def __init__(self, names: list[str], fd: int = 1, colour: bool | None = None) -> None:
        self.fd = fd
        self.width = max([len(SYSTEM)] + [len(n) for n in names])
        if colour is None:
            colour = os.isatty(fd) and "NO_COLOR" not in os.environ
        self.colour = colour
        self.colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
        self.broken = False

    def _prefix(self, name: str) -> bytes:
        text = f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | "
        if self.colour:
            code = self.colours.get(name, 0 if name == SYSTEM else 37)
            text = f"\x1b[{code}m{text}\x1b[0m"
        return text.encode()

    def lines(self, name: str, lines: list[bytes]) -> None:
        """Write complete lines (without their newlines) under ``name``'s prefix, in one write."""
        if not lines or self.broken:
            return
        prefix = self._prefix(name)
        self._write(b"".join(prefix + line + b"\n" for line in lines))

    def system(self, message: str) -> None:
        self.lines(SYSTEM, [message.encode(errors="backslashreplace")])

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except (BrokenPipeError, OSError):
                self.broken = True  # the reader went away; keep supervising, stop printing
                return
            view = view[written:]


class LineSplitter:
    """Turns chunks read from a pipe into complete lines, keeping the unfinished tail.

    The tail grows by appending, never by re-scanning (a progress bar that writes ``\r`` for
    minutes, or a huge line, stays linear), and a tail longer than `MAX_LINE` is let out as a
    line of its own so that memory stays bounded.
    """

    MAX_LINE = 64 * 1024

    def __init__(self, log: BinaryIO | None = None) -> None:
        self.tail = bytearray()
        self.log = log

    def feed(self, chunk: bytes) -> list[bytes]:
        end = chunk.rfind(b"\n")
        if end < 0:
            self.tail += chunk
            if len(self.tail) < self.MAX_LINE:
                return []
            return self.close()
        data = bytes(self.tail) + chunk[:end]
        self.tail = bytearray(chunk[end + 1:])
        lines = [p[:-1] if p.endswith(b"\r") else p for p in data.split(b"\n")]
        self._log(lines)
        return lines

    def close(self) -> list[bytes]:
        lines = [bytes(self.tail)] if self.tail else []
        self.tail = bytearray()
        self._log(lines)
        return lines

    def _log(self, lines: list[bytes]) -> None:
        if self.log is not None and lines:
            self.log.write(b"".join(line + b"\n" for line in lines))
            self.log.flush()
