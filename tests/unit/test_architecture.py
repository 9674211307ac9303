"""The house as drawn: which layer of dream may import which, and no import cycles.

`LAYERS` is the table of docs/architecture.md (the test checks they agree): each layer, the
modules it holds (a module belongs to the most specific prefix that names it) and the layers it
may import besides itself. Every ``import`` in dream/ counts — at module level, inside a function
(a lazy import is still a dependency), and under ``if TYPE_CHECKING:`` (for direction only: such
an import never runs, so it cannot close a cycle at run time).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "dream"

LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # layer:      (modules,                                          may import)
    "errors":     (("dream.errors",),                                ()),
    "base":       (("dream.progress", "dream.workdirs", "dream.download_cache", "dream.fetch_plan",
                    "dream.presets"),                                ("errors",)),
    "supervisor": (("dream.supervisor",),                            ()),
    "oci":        (("dream.oci",),                                   ("errors",)),
    "recipe":     (("dream.recipe",),                                ("oci", "supervisor", "base", "errors")),
    "store":      (("dream.store",),                                 ("oci", "base", "errors")),
    "registry":   (("dream.registry",),                              ("store", "recipe", "oci", "base", "errors")),
    "debian":     (("dream.debian",),                                ("store", "oci", "base", "errors")),
    "python":     (("dream.python",),                                ("debian", "recipe", "store", "oci", "base", "errors")),
    "services":   (("dream.services",),                              ("recipe", "supervisor", "errors")),
    "renderers":  (("dream.renderers",),                             ("services", "recipe", "supervisor", "errors")),
    "builders":   (("dream.builders",),                              ("debian", "python", "services", "recipe", "store",
                                                                      "oci", "supervisor", "base", "errors")),
    "lock":       (("dream.lock",),                                  ("builders", "python", "recipe", "oci", "errors")),
    "managers":   (("dream.managers", "dream.engine"),               ("renderers", "services", "supervisor", "registry",
                                                                      "store", "oci", "recipe", "base", "errors")),
    "vm":         (("dream.vm",),                                    ("debian", "store", "oci", "base", "errors")),
    "tasks":      (("dream", "dream.tasks", "dream.shell", "dream.verbs", "dream.project", "dream.doitdb",
                    "dream.boundary", "dream.__main__"),              ("*",)),
}
# Named exceptions to the table, each with the reason it still stands.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("dream.builders.from_image", "dream.registry.resolve"):
        "a from layer asks the registry for its base's manifest at lock time (a LockContext "
        "with resolvers would pass it in)",
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    typing_only: bool


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def known_modules(package: Path) -> set[str]:
    return {module_name(path, package) for path in package.rglob("*.py")}


def _typing_only_lines(tree: ast.Module) -> set[int]:
    """Line numbers of the statements under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                for inner in ast.walk(child):
                    if hasattr(inner, "lineno"):
                        lines.add(inner.lineno)
    return lines


def imports_of(path: Path, package: Path, modules: set[str]) -> list[Edge]:
    """Every import of a module of ``package`` in the file at ``path``; ``from a import b``
    is an import of ``a.b`` when that is a module, else of ``a``."""
    source = module_name(path, package)
    tree = ast.parse(path.read_text(), str(path))
    typing_only = _typing_only_lines(tree)
    is_package = path.name == "__init__.py"
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = source.split(".") if is_package else source.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `import dream.oci.tar as t` → dream.oci.tar
                target = target.rpartition(".")[0]
            if target and target != source and target.split(".")[0] == package.name:
                edges.append(Edge(source, target, node.lineno, node.lineno in typing_only))
    return edges


def all_edges(package: Path) -> list[Edge]:
    modules = known_modules(package)
    return [edge for path in sorted(package.rglob("*.py")) for edge in imports_of(path, package, modules)]


def layer_of(module: str, layers: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = LAYERS) -> str | None:
    """The layer whose longest module prefix names ``module``."""
    best, length = None, -1
    for layer, (prefixes, _) in layers.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = layer, len(prefix)
    return best


def violations(edges: list[Edge], layers: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = LAYERS,
               exceptions: dict[tuple[str, str], str] = EXCEPTIONS) -> list[str]:
    found = []
    for edge in edges:
        source, target = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if source is None or target is None:
            found.append(f"{edge.source}: no layer in the table for {edge.source if source is None else edge.target}")
            continue
        allowed = layers[source][1]
        if source == target or "*" in allowed or target in allowed:
            continue
        if (edge.source, edge.target) in exceptions:
            continue
        found.append(f"{edge.source.replace('.', '/')}.py:{edge.line}: {source} -> {target} "
                     f"(imports {edge.target})")
    return found


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module, over the imports that run."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if not edge.typing_only:
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_order_is_acyclic(layers: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> bool:
    remaining = {name: set(allowed) - {"*"} for name, (_, allowed) in layers.items()}
    while remaining:
        leaves = [name for name, needs in remaining.items() if not needs & remaining.keys()]
        if not leaves:
            return False
        for leaf in leaves:
            del remaining[leaf]
    return True


# -- the guard --------------------------------------------------------------------------------

def test_every_import_follows_the_table() -> None:
    assert violations(all_edges(PACKAGE)) == []


def test_no_import_cycles() -> None:
    assert cycles(all_edges(PACKAGE)) == []


def test_the_table_itself_has_no_cycle_and_names_every_module() -> None:
    assert layer_order_is_acyclic(LAYERS)
    unmapped = sorted(m for m in known_modules(PACKAGE) if layer_of(m) is None)
    assert unmapped == []


def test_every_exception_is_still_needed() -> None:
    edges = {(edge.source, edge.target) for edge in all_edges(PACKAGE)}
    assert [pair for pair in EXCEPTIONS if pair not in edges] == []


def test_docs_architecture_shows_this_table() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]*) \|$", text, re.MULTILINE)
    documented = {name: (tuple(re.findall(r"`([\w.]+)`", modules)), tuple(re.findall(r"`(\w+|\*)`", allowed)))
                  for name, modules, allowed in rows}
    assert documented == LAYERS


# -- the guard's own logic, on a planted package ------------------------------------------------

def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "dream"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [package, *[p for p in package.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return package


def test_a_store_importing_the_registry_is_caught(tmp_path: Path) -> None:
    package = plant(tmp_path, {"store/layout.py": "import os\n\ndef f():\n    from dream.registry import fetch\n",
                               "registry/fetch.py": "from dream.store.layout import f\n"})
    edges = all_edges(package)
    assert violations(edges) == ["dream/store/layout.py:4: store -> registry (imports dream.registry.fetch)"]
    assert cycles(edges) == [["dream.registry.fetch", "dream.store.layout"]]


def test_relative_and_typing_only_imports_are_resolved(tmp_path: Path) -> None:
    package = plant(tmp_path, {"oci/a.py": "from . import b\nfrom typing import TYPE_CHECKING\n"
                                           "if TYPE_CHECKING:\n    from dream.store import s\n",
                               "oci/b.py": "from .a import x\n", "store/s.py": "from dream.oci import a\n"})
    edges = all_edges(package)
    assert {(e.source, e.target, e.typing_only) for e in edges} == {
        ("dream.oci.a", "dream.oci.b", False), ("dream.oci.a", "dream.store.s", True),
        ("dream.oci.b", "dream.oci.a", False), ("dream.store.s", "dream.oci.a", False)}
    assert violations(edges) == ["dream/oci/a.py:4: oci -> store (imports dream.store.s)"]
    assert cycles(edges) == [["dream.oci.a", "dream.oci.b"]]  # the typing-only edge closes none


@pytest.mark.parametrize("module, layer", [("dream.engine", "managers"), ("dream.tasks", "tasks"),
                                           ("dream.supervisor.procs", "supervisor"), ("dream", "tasks")])
def test_a_module_belongs_to_its_most_specific_prefix(module: str, layer: str) -> None:
    assert layer_of(module) == layer
