"""Read a YAML file into plain Python values plus the line of every value.

PyYAML's constructors drop position information, so this walks the composed node tree itself and
records the line of each value under its path (a tuple of keys and list indices). Those lines are
what turns a cerberus error into ``file:line: path: message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dream.errors import DreamError, Location

PathKey = tuple[str | int, ...]
Lines = dict[PathKey, Location]


def read_yaml(path: Path, display: str) -> tuple[Any, Lines]:
    """Parse ``path``; return its data and a map from value path to location.

    ``display`` is the file name as errors should show it (relative to the project).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DreamError(f"cannot read: {exc.strerror}", Location(display)) from None
    except UnicodeDecodeError as exc:
        raise DreamError(f"not UTF-8 text ({exc.reason})", Location(display)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise DreamError(f"invalid YAML: {problem}", Location(display, line)) from None
    except yaml.YAMLError as exc:
        raise DreamError(f"invalid YAML: {exc}", Location(display)) from None
    if node is None:
        return None, {}
    reader = _NodeReader(display)
    return reader.value(node, ()), reader.lines


class _NodeReader:
    """Turns one file's composed nodes into values, noting each value's line on the way.

    One scalar constructor serves the whole file (a fresh one per scalar cost a loader's
    set-up each time, on every doit start-up).
    """

    def __init__(self, display: str) -> None:
        self.display = display
        self.lines: Lines = {}
        self.constructor = yaml.constructor.SafeConstructor()

    def at(self, node: yaml.Node) -> Location:
        return Location(self.display, node.start_mark.line + 1)

    def value(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines[path] = self.at(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise DreamError("mapping keys must be plain scalars", self.at(key_node), dotted(path))
                key = self.scalar(key_node)
                if key in result:
                    raise DreamError(f"duplicate key {key!r}", self.at(key_node), dotted(path))
                result[key] = self.value(value_node, path + (key,))
                # A key's own line is more useful than its value's when the value spans lines.
                self.lines[path + (key,)] = self.at(key_node)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise DreamError(f"invalid YAML value: {exc.problem}", self.at(node)) from None


def dotted(path: PathKey) -> str:
    """Render a value path the way errors show it: ``layers[1].files[0].mode``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def location_of(lines: Lines, path: PathKey) -> Location | None:
    """The location of ``path`` or of its nearest ancestor that has one."""
    for cut in range(len(path), -1, -1):
        found = lines.get(tuple(path[:cut]))
        if found is not None:
            return found
    return None


def host_path(lines: Lines, path: PathKey, value: str, root: Path) -> Path:
    """A host path written at ``path`` (a file's ``src``), resolved against the YAML file that
    wrote it, so a module's paths mean the same wherever it is imported from."""
    where = location_of(lines, path)
    base = (root / where.file).parent if where else root
    return (base / value).resolve()
