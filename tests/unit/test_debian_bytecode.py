"""Debian layers carry the bytecode of the Python modules their packages install (the standard
library first), as Debian's postinst scripts would have compiled it (dream.builders.debian)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dream.builders import debian
from dream.oci.tree import FILE, Entry, Tree
from dream.python import bytecode

VERSION = "%d.%d" % sys.version_info[:2]
TAG = sys.implementation.cache_tag
STDLIB = f"usr/lib/python{VERSION}"


def _context(packages: list[str], **spec: Any) -> Any:
    """The parts of a BuildContext the Debian builder's bytecode reads."""
    return SimpleNamespace(lock={"packages": [{"name": name} for name in packages]},
                           layer=SimpleNamespace(spec=spec))


def test_the_versions_are_read_from_the_packages_of_the_standard_library() -> None:
    packages = ["libc6", f"libpython{VERSION}-minimal", f"libpython{VERSION}-stdlib", "python3-pip"]
    assert debian._bytecode_versions(_context(packages)) == [VERSION]
    assert debian._bytecode_versions(_context(packages, bytecode=False)) == []
    assert debian._bytecode_versions(_context(["libc6", "bash"])) == []  # no Python: key unchanged


def _tree(tmp_path: Path) -> Tree:
    """A standard library module held in memory, one staged on disk, one that does not compile,
    a package module in dist-packages and a .py outside the Python folders."""
    staged = tmp_path / "staged" / "big.py"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"SIZE = 'staged'\n")
    tree = Tree("img/debian")
    tree.add_bytes(f"{STDLIB}/small.py", b"VALUE = 'memory'\n")
    tree.add(Entry(f"{STDLIB}/big.py", FILE, 0o644, size=staged.stat().st_size, source=staged))
    tree.add_bytes(f"{STDLIB}/lib2to3/tests/data/py2.py", b"print 'py2'\n")
    tree.add_bytes("usr/lib/python3/dist-packages/pip_like/__init__.py", b"NAME = 'pip'\n")
    tree.add_bytes("usr/share/doc/example.py", b"X = 1\n")
    tree.add_bytes(f"etc/python{VERSION}/sitecustomize.py", b"SITE = 1\n")
    tree.add_symlink(f"{STDLIB}/sitecustomize.py", f"../../../etc/python{VERSION}/sitecustomize.py")
    tree.add_symlink(f"{STDLIB}/dangling.py", "nowhere.py")
    return tree


@pytest.fixture
def compiler() -> None:
    if bytecode.compiler(VERSION) is None:
        pytest.fail(f"no python{VERSION} to compile with (this interpreter's own version)")


@pytest.mark.usefixtures("compiler")
def test_modules_in_memory_and_staged_get_unchecked_hash_pycs(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    debian._add_bytecode(tree, [VERSION], tmp_path / "scratch", "img/debian")
    pycs = sorted(path for path in tree.entries if path.endswith(".pyc"))
    assert pycs == [f"{STDLIB}/__pycache__/big.{TAG}.pyc", f"{STDLIB}/__pycache__/sitecustomize.{TAG}.pyc",
                    f"{STDLIB}/__pycache__/small.{TAG}.pyc",
                    f"usr/lib/python3/dist-packages/pip_like/__pycache__/__init__.{TAG}.pyc"]
    for path in pycs:
        entry = tree.entries[path]
        assert entry.source is not None and entry.size == entry.source.stat().st_size
        assert int.from_bytes(entry.source.read_bytes()[4:8], "little") == 0b01  # unchecked hash


@pytest.mark.usefixtures("compiler")
def test_the_bytecode_is_the_same_bytes_every_build_and_what_python_imports(tmp_path: Path) -> None:
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    debian._add_bytecode(first, [VERSION], tmp_path / "a" / "scratch", "img/debian")
    debian._add_bytecode(second, [VERSION], tmp_path / "b" / "scratch", "img/debian")
    pyc = f"{STDLIB}/__pycache__/small.{TAG}.pyc"
    data = first.entries[pyc].source.read_bytes()  # type: ignore[union-attr]
    assert data == second.entries[pyc].source.read_bytes()  # type: ignore[union-attr]
    root = tmp_path / "root"
    (root / "__pycache__").mkdir(parents=True)
    (root / "small.py").write_text("VALUE = 'edited after the build'\n")
    (root / f"__pycache__/small.{TAG}.pyc").write_bytes(data)
    run = subprocess.run([sys.executable, "-c", "import small; print(small.VALUE)"], cwd=root,
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "memory"  # the pyc, trusted as it is: nothing compiled at start


def test_without_the_interpreter_the_layer_has_no_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bytecode, "compiler", lambda version: None)
    monkeypatch.setattr(bytecode, "_WARNED", set())
    tree = _tree(tmp_path)
    debian._add_bytecode(tree, [VERSION], tmp_path / "scratch", "img/debian")
    assert not any(path.endswith(".pyc") for path in tree.entries)
    assert "ships without .pyc files" in capsys.readouterr().err
