"""What every service task shares: the ``-d NAME`` parameter and the named ``uptodate`` check."""

from __future__ import annotations

from typing import Any, Callable

DEPLOYMENT_PARAM = {"name": "deployment", "short": "d", "long": "deployment", "default": "",
                    "help": "the deployment (default: $DREAM_DEPLOYMENT, the one marked default, "
                            "or the only one)"}


class Check:
    """An ``uptodate`` check given the Task (so it reads ``-d``), named in words for `doit info`."""

    def __init__(self, what: str, test: Callable[[Any], bool]) -> None:
        self.what, self.test = what, test

    def __call__(self, task: Any) -> bool:
        return self.test(task)

    def __repr__(self) -> str:
        return self.what
