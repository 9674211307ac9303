"""doit entry point: every task comes from the `dream` package (see dream/tasks.py)."""

from pathlib import Path

import dream.tasks

Path(".dream").mkdir(exist_ok=True)
DOIT_CONFIG = {"backend": "json", "dep_file": ".dream/doit.json", "default_tasks": ["build"]}
globals().update(dream.tasks.dodo_tasks())
