"""Read a YAML file into plain Python values plus the line of every value.

PyYAML's constructors drop position information, so this walks the composed node tree itself and
records the line of each value under its path (a tuple of keys and list indices). Those lines are
what turns a cerberus error into ``file:line: path: message``.

A YAML file is bounded before it can cost much: at most `MAX_ALIASES` alias uses, `MAX_DEPTH`
levels of nesting (in the file and after aliases are expanded), and `MAX_VALUES` values after
expansion; an alias inside the node it names is refused. Every command loads every recipe, so
one hostile file ("billion laughs", ``&a [*a]``, 3000 nested ``[``) must cost a line, not
minutes, gigabytes or a RecursionError.

YAML's ``\\u`` escapes are UTF-16 code units (YAML 1.2 reads JSON): an escaped surrogate pair
(``"\\ud83d\\ude00"``) is the one character it encodes; a lone surrogate is no character (no
file, label or value can hold it) and is refused at its line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dream.errors import DreamError, Location
from dream.recipe import facts
from dream.recipe.paths import PathRefused, source_path

PathKey = tuple[str | int, ...]
Lines = dict[PathKey, Location]

MAX_ALIASES = 1000     # alias uses (``*name``) in one file
MAX_DEPTH = 100        # nesting levels of mappings and lists
MAX_VALUES = 100_000   # values in one file once aliases are expanded

_SURROGATE = re.compile("[\ud800-\udfff]")
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


class _Limit(Exception):
    """A resource limit hit while composing; ``mark`` is where."""

    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader's composer, counting alias uses and nesting depth as it goes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_uses = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIASES:
                raise _Limit(f"too many YAML aliases (limit {MAX_ALIASES})", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Limit(f"YAML nested too deeply (limit {MAX_DEPTH} levels)", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(text: str) -> yaml.Node | None:
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def read_yaml(path: Path, display: str) -> tuple[Any, Lines]:
    """Parse ``path``; return its data and a map from value path to location.

    ``display`` is the file name as errors should show it (relative to the project).
    """
    try:
        text = facts.read_text(path, "utf-8")
    except OSError as exc:
        raise DreamError(f"cannot read: {exc.strerror}", Location(display)) from None
    except UnicodeDecodeError as exc:
        raise DreamError(f"not UTF-8 text ({exc.reason})", Location(display)) from None
    try:
        node = _compose(text)
    except _Limit as exc:
        raise DreamError(exc.message, Location(display, exc.mark.line + 1 if exc.mark else 0)) from None
    except RecursionError:  # a limit above should come first; never a traceback regardless
        raise DreamError(f"YAML nested too deeply (limit {MAX_DEPTH} levels)", Location(display)) from None
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
        self.values = 0
        self.open: set[int] = set()  # the nodes being read, outermost first: an alias to one loops

    def at(self, node: yaml.Node) -> Location:
        return Location(self.display, node.start_mark.line + 1)

    def value(self, node: yaml.Node, path: PathKey) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise DreamError(f"YAML aliases expand to too many values (limit {MAX_VALUES})", self.at(node))
        if isinstance(node, yaml.CollectionNode):
            if id(node) in self.open:
                raise DreamError("recursive YAML alias (a node that contains itself)", self.at(node), dotted(path))
            if len(self.open) >= MAX_DEPTH:
                raise DreamError(f"YAML nested too deeply (limit {MAX_DEPTH} levels)", self.at(node))
            self.open.add(id(node))
            try:
                return self.collection(node, path)
            finally:
                self.open.discard(id(node))
        self.lines[path] = self.at(node)
        return self.scalar(node, path)

    def collection(self, node: yaml.CollectionNode, path: PathKey) -> Any:
        self.lines[path] = self.at(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise DreamError("mapping keys must be plain scalars", self.at(key_node), dotted(path))
                key = self.scalar(key_node, path)
                if key in result:
                    raise DreamError(f"duplicate key {key!r}", self.at(key_node), dotted(path))
                result[key] = self.value(value_node, path + (key,))
                # A key's own line is more useful than its value's when the value spans lines.
                self.lines[path + (key,)] = self.at(key_node)
            return result
        return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]

    def scalar(self, node: yaml.Node, path: PathKey) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise DreamError(f"invalid YAML value: {exc.problem}", self.at(node)) from None
        if isinstance(value, str) and _SURROGATE.search(value):
            value = _PAIR.sub(_joined, value)
            lone = _SURROGATE.search(value)
            if lone:
                raise DreamError(f"\\u{ord(lone[0]):04x} is half of a UTF-16 surrogate pair, not a character "
                                 "(write the character itself, or a \\UXXXXXXXX escape)", self.at(node), dotted(path))
        return value


def _joined(pair: re.Match[str]) -> str:
    high, low = (ord(c) for c in pair[0])
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


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


def host_path(lines: Lines, path: PathKey, value: str, root: Path, contained: bool = True) -> Path:
    """A host path written at ``path`` (a file's ``src``), resolved against the YAML file that
    wrote it, so a module's paths mean the same wherever it is imported from.

    ``contained`` (the default) applies dream/recipe/paths.py's rule: the path must stay inside
    the project (or, for a shipped preset, its folder); else a `DreamError` at its line. Only a
    registry's ``ca_file`` (a trust setting of this host, never copied into an image) passes
    ``contained=False``."""
    where = location_of(lines, path)
    yaml_file = root / where.file if where else root / "recipe.yaml"
    if not contained:
        return facts.resolve(yaml_file.parent / value)
    try:
        return source_path(value, yaml_file, root)
    except PathRefused as exc:
        raise DreamError(str(exc), where, dotted(path)) from None
