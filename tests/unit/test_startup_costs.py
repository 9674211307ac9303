"""What a no-op, a one-file change and a relock no longer pay for (issue 14), each checked to give
what the slower way gave: doit's creator order, doit's database, the toolkit's metadata, uv's
answers, a kept Debian layer's check. No network, no Docker."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from doit import dependency

from dream import doitdb, project
from dream.builders import cuda_versions
from dream.builders.debian import DebianBuilder
from dream.debian import apt as apt_module
from dream.errors import DreamError
from dream.oci import compress
from dream.python import resolve as resolve_module
from dream.python.target import PythonTarget

TARGET = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")


def test_a_no_op_imports_no_compressor_tar_writer_or_apt() -> None:
    code = ("import sys, dream.tasks; print(sorted(m for m in ('zstandard', 'isal.igzip', 'concurrent.futures', "
            "'dream.oci.layer', 'dream.debian.apt', 'tomllib', 'uuid', 'platform') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"  # what builds, locks or downloads imports them when it runs


def test_codec_fingerprints_are_the_libraries_versions() -> None:
    import isal
    import zstandard
    assert compress.CODECS["gzip"].fingerprint == (
        f"isal-{isal.__version__}-gzip-1-members-{compress.MEMBER}-deflated-from-{compress.DEFLATED_FROM}")
    assert compress.CODECS["zstd"].fingerprint == (
        f"zstandard-{zstandard.__version__}-libzstd-{'.'.join(map(str, zstandard.ZSTD_VERSION))}-3-mt")


def task_b() -> None:
    """a creator defined first in the file is listed after task_a below: doit sorts by line"""


def decorated(function: Any) -> Any:
    return function


@decorated
def task_a() -> None:
    """a decorated creator: its line is the decorator's"""


class Creator:
    def create_doit_tasks(self) -> None:
        """a creator by method"""


def test_creators_get_the_lines_doit_would_give_them() -> None:
    namespace = {"task_b": task_b, "task_a": task_a, "creator": Creator(), "other": 1}
    found = project.task_creators(namespace, ())
    assert [(name, line) for name, _, line in found] == [
        ("b", inspect.getsourcelines(task_b)[1]), ("a", inspect.getsourcelines(task_a)[1]),
        ("creator", inspect.getsourcelines(Creator().create_doit_tasks)[1])]
    with pytest.raises(Exception, match="command name"):
        project.task_creators({"task_list": task_b}, ("list",))


def test_doits_database_is_written_only_when_a_task_changed_it(tmp_path: Path) -> None:
    doitdb.install()
    name = str(tmp_path / "doit.json")
    db = dependency.JsonDB(name, dependency.JSONCodec())
    db.set("layer:x", "result:", "1")
    db.dump()
    written = os.stat(name).st_mtime_ns
    os.utime(name, ns=(written - 10**9, written - 10**9))
    again = dependency.JsonDB(name, dependency.JSONCodec())
    again.dump()  # nothing changed: the file stays as it is
    assert os.stat(name).st_mtime_ns == written - 10**9
    again.set("layer:x", "result:", "2")
    again.dump()
    assert json.loads(Path(name).read_text())["layer:x"]["result:"] == "2"


def test_an_exact_toolkit_release_asks_pip_once_a_range_every_time(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_CACHE", str(tmp_path))
    asked: list[str] = []

    def pip(specifier: str) -> dict[str, Any]:
        asked.append(specifier)
        return {"version": "12.8.1", "requires_dist": ["nvidia-cublas-cu12==12.8.4.1.*; extra == 'cublas'"]}

    monkeypatch.setattr(cuda_versions, "_pip_metadata", pip)
    for _ in range(2):
        cuda_versions.toolkit.cache_clear()  # a new process
        assert cuda_versions.toolkit("==12.8.1").extras == {"cublas": {"nvidia-cublas-cu12": "==12.8.4.1.*"}}
        cuda_versions.toolkit("==12.8.*")
    assert asked == ["==12.8.1", "==12.8.*", "==12.8.*"]
    (tmp_path / "cuda-toolkit" / "12.8.1.json").write_text("{damaged")
    cuda_versions.toolkit.cache_clear()
    assert cuda_versions.toolkit("==12.8.1").version == "12.8.1" and asked[-1] == "==12.8.1"
    cuda_versions.toolkit.cache_clear()


def test_a_lock_asks_uv_each_question_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []

    def compile_pylock(requirements: list[str], target: PythonTarget, constraints: Any = (),
                       what: str = "", no_deps: bool = False) -> list[dict[str, Any]]:
        asked.append(tuple(requirements))
        return []

    monkeypatch.setattr(resolve_module, "compile_pylock", compile_pylock)
    with resolve_module.answers_kept():
        resolve_module.resolve(["rich"], TARGET, ["numpy==2"], "the clash check")
        resolve_module.resolve(["rich"], TARGET, ["numpy==2"], "the python layer")
        resolve_module.resolve(["rich"], TARGET, ["numpy==1"], "other pins")
    resolve_module.resolve(["rich"], TARGET, ["numpy==2"])  # outside a lock: asked again
    assert asked == [("rich",), ("rich",), ("rich",)]


def test_a_kept_debian_layer_reads_no_lists_when_every_deb_is_cached(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_CACHE", str(tmp_path))
    updates: list[str] = []
    monkeypatch.setattr(apt_module.Apt, "update", lambda self, again=False: updates.append(self.architecture))
    monkeypatch.setattr(apt_module.Apt, "_shown", lambda self, specs: {})  # the sources hold nothing now
    package = {"name": "bash", "version": "5.2", "architecture": "amd64", "filename": "pool/b/bash.deb",
               "sha256": "ab" * 32, "size": 1}
    entry = {"architecture": "amd64", "packages": [package]}
    debs = apt_module.Apt("amd64").debs
    debs.mkdir(parents=True)
    (debs / f"{package['sha256']}.deb").write_bytes(b"x")
    layer, recipe = SimpleNamespace(name="debian", location=None), SimpleNamespace(name="x")
    DebianBuilder().recheck(layer, recipe, entry)  # type: ignore[arg-type]  # kept: the cache has it
    assert updates == []
    (debs / f"{package['sha256']}.deb").unlink()
    with pytest.raises(DreamError, match="bash 5.2 no longer in the apt sources"):
        DebianBuilder().recheck(layer, recipe, entry)  # type: ignore[arg-type]
    assert updates == ["amd64"]
