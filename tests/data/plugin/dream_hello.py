"""A dream plugin: ``render:hello`` writes hello.txt naming the deployment's services, and
``run:hello`` says hello with what it rendered (docs/renderers.md, "Writing a plugin")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from dream.renderers.base import File, Target


class HelloRenderer:
    """``build/<deployment>/hello/hello.txt``: one line per service."""

    name = "hello"

    def render(self, plan: Mapping[str, Any], target: Target) -> list[File]:
        lines = [f"hello, {plan['name']}:"] + [f"- {service['name']}" for service in plan["services"]]
        return [File("hello.txt", "\n".join(lines) + "\n")]


class HelloManager:
    """Runs nothing: prints the rendered file and returns 0."""

    name = "hello"
    renders = "hello"

    def up(self, plan: Mapping[str, Any], files: Path | None, root: Path) -> int:
        assert files is not None
        print(f"hello manager up: {plan['name']}: " + " ".join((files / "hello.txt").read_text().split()))
        return 0

    def down(self, plan: Mapping[str, Any], files: Path | None, root: Path) -> int:
        return 0
