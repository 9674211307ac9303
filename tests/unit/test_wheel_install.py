"""Wheels installed into a layer's tree, streamed from the zip (dream.python.install), and their
bytecode (dream.python.bytecode): the same tar as installer unpacking to disk, RECORDs checked."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dream.builders.files import add_host_path
from dream.errors import DreamError
from dream.oci.tar import tar_chunks
from dream.oci.tree import Tree
from dream.python import bytecode
from dream.python.install import INSTALLER_NAME, install_into
from dream.python.resolve import Wheel
from dream.python.target import PythonTarget

TARGET = PythonTarget("%d.%d" % sys.version_info[:2], "manylinux_2_36_x86_64", "/usr/local")
MTIME = 1


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def make_wheel(directory: Path, name: str = "pkg", files: dict[str, bytes] | None = None,
               lie_about: str = "", method: int = zipfile.ZIP_DEFLATED) -> Path:
    """A wheel with modules, a console script, a .data script and header; ``lie_about`` names a
    member whose RECORD hash is wrong."""
    files = files if files is not None else {
        f"{name}/__init__.py": b"VALUE = 1\n",
        f"{name}/sub/mod.py": b"def f():\n    return {'a', 'b', 'c'}\n",
        f"{name}/lib.so": b"\x7fELF" + bytes(range(256)) * 40,
        f"{name}-1.0.data/scripts/tool": b"#!python\nprint('tool')\n",
        f"{name}-1.0.data/headers/{name}.h": b"int x;\n",
    }
    info = f"{name}-1.0.dist-info"
    meta = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
            f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            f"{info}/entry_points.txt": f"[console_scripts]\n{name}-cli = {name}:main\n".encode()}
    everything = {**files, **meta}
    record = "".join(f"{path},{_hash(b'lie' if path == lie_about else data)},{len(data)}\n"
                     for path, data in everything.items()) + f"{info}/RECORD,,\n"
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in everything.items():
            info_ = zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0))
            info_.external_attr = (0o100755 if member.endswith("tool") else 0o100644) << 16
            archive.writestr(info_, data, method)
        archive.writestr(f"{info}/RECORD", record)
    return path


def wheel_of(path: Path, drop: tuple[str, ...] = ()) -> Wheel:
    return Wheel(path.name.split("-")[0], "1.0", path.name, hashlib.sha256(path.read_bytes()).hexdigest(),
                 path.stat().st_size, drop)


def tar_of(tree: Tree) -> bytes:
    return b"".join(tar_chunks(tree.sorted_entries(), MTIME, "test/layer"))


def installed_on_disk(path: Path, root: Path, wheel: Wheel) -> Tree:
    """What dream did before: installer writes the files under ``root``, the tree copies them."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile
    scheme = {**TARGET.scheme(), "headers": f"{TARGET.scheme()['headers']}/{wheel.filename.split('-')[0]}"}
    destination = SchemeDictionaryDestination(scheme, interpreter=TARGET.interpreter,  # pip's headers
                                              script_kind="posix", destdir=str(root))
    with WheelFile.open(path) as source:
        install(source, destination, additional_metadata={"INSTALLER": INSTALLER_NAME})
    for dropped in wheel.drop:
        (root / dropped).unlink()
    tree = Tree()
    add_host_path(tree, root, "/", None, 0, 0, [])
    return tree


@pytest.mark.parametrize("drop", [(), ("usr/local/lib/{v}/dist-packages/pkg/sub/mod.py",)])
def test_the_streamed_tree_is_the_tar_that_unpacking_to_disk_made(tmp_path: Path, drop: tuple[str, ...]) -> None:
    path = make_wheel(tmp_path)
    wheel = wheel_of(path, tuple(d.format(v=f"python{TARGET.version}") for d in drop))
    streamed = Tree("test/layer")
    modules = install_into(streamed, path, wheel, TARGET)
    assert tar_of(streamed) == tar_of(installed_on_disk(path, tmp_path / "root", wheel))
    site = TARGET.site.lstrip("/")
    entry = streamed.get(f"{site}/pkg/lib.so")
    assert entry is not None and entry.member == "pkg/lib.so" and entry.data is None  # not read
    assert streamed.get("usr/local/bin/tool").mode == 0o755  # type: ignore[union-attr]
    assert streamed.get("usr/local/bin/pkg-cli") is not None
    assert streamed.get(f"usr/local/include/python{TARGET.version}/pkg/pkg.h") is not None  # as pip
    record = streamed.get(f"{site}/pkg-1.0.dist-info/RECORD")
    assert record is not None and record.data is not None and b"pkg/sub/mod.py," in record.data
    assert sorted(m.member for m in modules) == sorted(
        m for m in ("pkg/__init__.py", "pkg/sub/mod.py") if f"{site}/{m}" not in wheel.drop)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_members_stored_or_compressed_another_way_stream_the_same_bytes(tmp_path: Path, method: int) -> None:
    path = make_wheel(tmp_path, method=method)
    streamed = Tree("test/layer")
    install_into(streamed, path, wheel_of(path), TARGET)
    assert tar_of(streamed) == tar_of(installed_on_disk(path, tmp_path / "root", wheel_of(path)))


def test_a_damaged_member_is_one_line_naming_it(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, method=zipfile.ZIP_BZIP2)
    data = bytearray(path.read_bytes())
    start = data.index(b"BZh")  # the first bzip2 stream: the first member's data
    data[start + 10:start + 30] = bytes(20)
    path.write_bytes(bytes(data))
    tree = Tree("test/layer")
    install_into(tree, path, wheel_of(path), TARGET)
    with pytest.raises(DreamError) as caught:
        tar_of(tree)
    assert "\n" not in str(caught.value) and path.name in str(caught.value)


def test_a_member_that_is_not_what_its_record_says_stops_the_layer(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, lie_about="pkg/lib.so")
    tree = Tree("test/layer")
    install_into(tree, path, wheel_of(path), TARGET)
    with pytest.raises(DreamError) as caught:
        tar_of(tree)
    message = str(caught.value)
    assert "\n" not in message and "pkg/lib.so" in message and "RECORD" in message


def test_two_wheels_of_one_layer_that_install_the_same_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_wheel(tmp_path / "a", "one", {"shared/x.py": b"x = 1\n"})
    second = make_wheel(tmp_path / "b", "two", {"shared/x.py": b"x = 2\n"})
    tree = Tree()
    install_into(tree, first, wheel_of(first), TARGET)
    with pytest.raises(DreamError, match="both install /usr/local/lib/python.*/shared/x.py"):
        install_into(tree, second, wheel_of(second), TARGET)


def _compiled(tmp_path: Path, modules: dict[str, bytes], processes: int) -> dict[str, bytes]:
    path = make_wheel(tmp_path, files=modules) if not (tmp_path / "pkg-1.0-py3-none-any.whl").exists() \
        else tmp_path / "pkg-1.0-py3-none-any.whl"
    tree = Tree("test/layer")
    sources = install_into(tree, path, wheel_of(path), TARGET)
    found = bytecode.compiler(TARGET.version)
    assert found is not None  # this interpreter's own version at least
    scratch = tmp_path / f"scratch-{processes}"
    jobs = [[str(s.wheel), s.member, "/" + s.image_path, str(scratch / s.image_path)] for s in sources]
    return {image: Path(file).read_bytes() for image, file in bytecode._run_workers(found[0], jobs, "t", scratch / "jobs", processes)}


MODULES = {f"pkg/m{i}.py": (f"NAMES = {{'a{i}', 'b', 'c', 'self'}}\n"
                            f"class C{i}:\n    def f(self, x):\n        return x + {i}\n").encode()
           for i in range(12)}


def test_bytecode_is_the_same_bytes_whatever_the_number_of_processes(tmp_path: Path) -> None:
    one, three = _compiled(tmp_path, MODULES, 1), _compiled(tmp_path, MODULES, 3)
    assert one == three and len(one) == 12
    pyc = one[f"{TARGET.site.lstrip('/')}/pkg/__pycache__/m0.{sys.implementation.cache_tag}.pyc"]
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, not checked against the source


def test_unchecked_bytecode_is_what_the_interpreter_imports(tmp_path: Path) -> None:
    """The pyc is used as it is: a source edited after the build does not make it recompile."""
    tree = Tree("test/layer")
    path = make_wheel(tmp_path, files={"probe/__init__.py": b"VALUE = 'compiled'\n", "bad/x.py": b"print 'py2'\n"})
    sources = install_into(tree, path, wheel_of(path), TARGET)
    bytecode.add_bytecode(tree, sources, TARGET.version, tmp_path / "scratch", "t")
    site = TARGET.site.lstrip("/")
    tag = sys.implementation.cache_tag
    assert tree.get(f"{site}/bad/__pycache__/x.{tag}.pyc") is None  # does not compile: none, as pip
    pyc = tree.get(f"{site}/probe/__pycache__/__init__.{tag}.pyc")
    assert pyc is not None and pyc.source is not None
    root = tmp_path / "root"
    (root / "probe/__pycache__").mkdir(parents=True)
    (root / "probe/__init__.py").write_text("VALUE = 'edited'\n")
    (root / f"probe/__pycache__/__init__.{tag}.pyc").write_bytes(pyc.source.read_bytes())
    run = subprocess.run([sys.executable, "-c", "import probe; print(probe.VALUE)"], cwd=root,
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "compiled"


def test_without_an_interpreter_of_the_version_the_layer_has_no_bytecode_and_says_so_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bytecode, "compiler", lambda version: None)
    monkeypatch.setattr(bytecode, "_WARNED", set())
    path = make_wheel(tmp_path)
    for label in ("img/a", "img/b"):
        tree = Tree(label)
        bytecode.add_bytecode(tree, install_into(tree, path, wheel_of(path), TARGET), "3.99", tmp_path, label)
        assert not any("__pycache__" in p for p in tree.entries)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no python3.99" in err[0] and "img/a" in err[0]
    assert bytecode.compiler_key("3.99") == "none"


def test_the_interpreter_is_asked_once_and_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_CACHE", str(tmp_path))
    asked: list[str] = []
    real_ask = bytecode._ask
    monkeypatch.setattr(bytecode, "_ask", lambda path: asked.append(path) or real_ask(path))
    version = "%d.%d" % sys.version_info[:2]
    first = bytecode._identity(sys.executable, version)
    again = bytecode._identity(sys.executable, version)
    assert first == again == f"CPython {sys.version.split()[0]}" and len(asked) == 1
    assert bytecode._identity(sys.executable, "3.1") is None  # another version: not this one


def _interpreters() -> list[str]:
    """Every Python 3.8–3.13 this machine has (at least the one running the tests)."""
    return [v for v in (f"3.{minor}" for minor in range(8, 14)) if bytecode.compiler(v) is not None]


def test_set_constants_compile_to_the_same_bytes_on_every_python_at_hand(tmp_path: Path) -> None:
    """Before 3.11 a frozenset constant is marshalled in hash order: the workers' fixed
    PYTHONHASHSEED is what makes three runs agree."""
    versions = _interpreters()
    assert "%d.%d" % sys.version_info[:2] in versions
    path = make_wheel(tmp_path, files=MODULES)
    sources = install_into(Tree(), path, wheel_of(path), TARGET)
    for version in versions:
        python = bytecode.compiler(version)[0]  # type: ignore[index]
        runs = []
        for run in range(3):
            scratch = tmp_path / f"{version}-{run}"
            jobs = [[str(s.wheel), s.member, "/" + s.image_path, str(scratch / s.image_path)] for s in sources]
            written = bytecode._run_workers(python, jobs, "t", scratch / "jobs", 1)
            runs.append(sorted((Path(image).name, Path(file).read_bytes()) for image, file in written))
        assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 12, version
