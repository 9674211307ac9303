"""A dream project: a directory with ``recipes/`` and a two-line ``dodo.py``.

``dodo_globals`` is everything that dodo.py needs (doit's config and the task creators), so the
file a user keeps in their project never changes when dream does; ``init`` writes it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from dream.errors import DreamError

DODO = """\
import dream.project  # dream's tasks for the recipes under recipes/: `doit list --all`
globals().update(dream.project.dodo_globals())
"""
STATE_DIR = ".dream"
INTERRUPTED = ("dream: interrupted; nothing half-written is kept (store writes are atomic), "
               "run it again to go on")


def _interrupted(kind: type[BaseException], value: BaseException, tb: TracebackType | None,
                 previous: Any = sys.excepthook) -> None:
    """Ctrl-C anywhere in doit (it lets KeyboardInterrupt through) is one line, not a traceback.
    Python still exits by SIGINT afterwards, so shells and CI see an interrupted command."""
    if issubclass(kind, KeyboardInterrupt):
        print(f"\n{INTERRUPTED}", file=sys.stderr)
    else:
        previous(kind, value, tb)


def dodo_globals(root: Path | None = None) -> dict[str, Any]:
    """``DOIT_CONFIG`` and the ``task_*`` creators for the project at ``root`` (default: cwd).

    A bad ``DREAM_STORE``/``DREAM_CACHE`` or an unwritable project stops here with one line.
    """
    sys.excepthook = _interrupted
    from dream.tasks import dodo_tasks
    from dream.workdirs import check_environment
    root = root or Path.cwd()
    try:
        check_environment()
        (root / STATE_DIR).mkdir(exist_ok=True)
    except DreamError as exc:
        print(f"dream: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        print(f"dream: cannot create {root / STATE_DIR}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from None
    from dream.doitdb import install
    install()  # doit.json written by temp-and-rename (doit's own json backend truncates first)
    config = {"backend": "json", "dep_file": f"{STATE_DIR}/doit.json", "default_tasks": ["build"]}
    return {"DOIT_CONFIG": config, **dodo_tasks(root)}


def init(root: Path) -> list[str]:
    """Write ``dodo.py`` and make ``recipes/`` in ``root``; return what was made.

    An existing dodo.py is never overwritten (it may be the user's own).
    """
    dodo = root / "dodo.py"
    if dodo.exists():
        raise DreamError(f"{dodo} already exists; not overwriting it (delete it to start over)")
    made = []
    recipes = root / "recipes"
    if not recipes.is_dir():
        recipes.mkdir(parents=True)
        made.append("recipes/")
    temporary = dodo.with_name(".dodo.py.tmp")
    temporary.write_text(DODO)
    temporary.replace(dodo)
    return ["dodo.py", *made]
