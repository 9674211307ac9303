"""doit's json database (``.dream/doit.json``), written atomically.

doit 0.37's `doit.dependency.JsonDB.dump` opens the file with ``"w"`` (truncating it) and then
writes: a full disk or a kill in between leaves a truncated file, and every later command fails
on it ("Invalid JSON data") until the user deletes it. doit picks its backend class by name from
a table built before dodo.py is read; other backends can come only from entry points or an INI
file in the user's project, not from DOIT_CONFIG. So dream keeps ``backend: json`` (the same
file, the same format) and `install` replaces the json backend's two file operations:

- ``dump`` writes a temporary file beside the database, fsyncs it and renames it over the old
  one: the file is always the old or the new database, never half of one. A write that fails
  (ENOSPC) leaves the old file and prints one line; doit's state is only a cache here (a layer
  is up to date when the store holds its key), so losing one update costs a re-check at most.
- ``_load`` of a damaged file (left by an older dream, or by hand) sets it aside as
  ``doit.json.bad`` with one line and starts empty, instead of failing every command.
- ``dump`` of a database that no task changed writes nothing: doit dumps after every command,
  and the fsync'd write cost a no-op build 2-8 ms of its 0.2 s. (Another command that wrote the
  file meanwhile keeps its state, as it would have had it finished after this one.)
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any

from doit import dependency

_original_load = dependency.JsonDB._load


def _atomic_dump(self: Any) -> None:
    text = self.codec.encode(self._db)
    if text == getattr(self, "dream_loaded", None):
        return  # what the file holds already
    directory = os.path.dirname(os.path.abspath(self.name))
    name = ""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".doit-db-")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, self.name)
        self.dream_loaded = text
    except OSError as exc:
        if name:
            with contextlib.suppress(OSError):
                os.unlink(name)
        print(f"dream: could not save doit's state to {self.name}: {exc.strerror or exc} "
              "(the previous file is kept; the next command re-checks what changed)", file=sys.stderr)


def _tolerant_load(self: Any) -> Any:
    try:
        loaded = _original_load(self)
        self.dream_loaded = self.codec.encode(loaded)  # as `_atomic_dump` would write it
        return loaded
    except dependency.DatabaseException:
        aside = self.name + ".bad"
        with contextlib.suppress(OSError):
            os.replace(self.name, aside)
        print(f"dream: {self.name} was damaged; set it aside as {aside} and started afresh "
              "(built layers stay built: the store knows them)", file=sys.stderr)
        return {}


def install() -> None:
    """Make doit's json backend write atomically (idempotent)."""
    dependency.JsonDB.dump = _atomic_dump
    dependency.JsonDB._load = _tolerant_load
