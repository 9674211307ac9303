"""tools/gpu_check.py: its layer unpacking (no GPU needed) and the real check on an NVIDIA host."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import zstandard

from tests.conftest import make_project

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "gpu_check.py"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    """The script imported as a module (it is a tool, not part of the dream package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


# -- a hand-made OCI layout -----------------------------------------------------------------

def entry(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
          link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    """One tar entry; names are kept verbatim (a hostile layer is exactly what some tests need)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.mtime = 1_700_000_000
    if data is not None:
        info.size = len(data)
    return info, data


def directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    return entry(name, kind=tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return entry(name, kind=tarfile.SYMTYPE, mode=0o777, link=target)


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def put_blob(store: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (store / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_store(store: Path, name: str, layers: list[tuple[str, list[tuple[tarfile.TarInfo, bytes | None]]]]) -> Path:
    """An OCI image layout holding one image tagged ``name`` made of ``layers`` (media type, entries)."""
    descriptors = []
    for media_type, entries in layers:
        raw = tar_bytes(entries)
        blob = gzip.compress(raw) if media_type == GZIP else zstandard.ZstdCompressor().compress(raw)
        descriptors.append({"mediaType": media_type, **put_blob(store, blob)})
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=/opt/lib", "NVIDIA_VISIBLE_DEVICES=all"],
                         "WorkingDir": "/srv"},
              "rootfs": {"type": "layers", "diff_ids": []}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **put_blob(store, json.dumps(config).encode())},
                "layers": descriptors}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            **put_blob(store, json.dumps(manifest).encode()),
                            "annotations": {"org.opencontainers.image.ref.name": name}}]}
    (store / "index.json").write_text(json.dumps(index))
    (store / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return store


# -- unpacking ------------------------------------------------------------------------------

def test_unpack_applies_layers_and_whiteouts(gpu_check: ModuleType, tmp_path: Path) -> None:
    lower = [directory("etc/"), entry("etc/hello", b"hello\n", mode=0o640), entry("etc/gone", b"x"),
             directory("opq/"), entry("opq/old", b"old"), directory("opq/sub/"), entry("opq/sub/deep", b"d"),
             directory("usr/"), directory("usr/lib/"), symlink("lib", "usr/lib"),
             directory("locked/", mode=0o555), entry("locked/inside", b"i")]
    upper = [entry("etc/.wh.gone", b""), directory("opq/"), entry("opq/new", b"new"),
             entry("opq/.wh..wh..opq", b""), symlink("etc/link", "hello"), directory("bin/"),
             entry("bin/su", b"#!/bin/sh\n", mode=0o4755), entry("lib/libz.so.1", b"z"),
             entry("etc/hello", b"hello again\n", mode=0o600),
             entry("etc/hard", kind=tarfile.LNKTYPE, link="etc/hello")]
    store = make_store(tmp_path / "store", "tiny", [(GZIP, lower), (ZSTD, upper)])
    image = gpu_check.load_image(store, "tiny")
    assert image.config["config"]["WorkingDir"] == "/srv" and len(image.layers) == 2
    root = tmp_path / "root"
    gpu_check.unpack(image, root)

    assert (root / "etc/hello").read_text() == "hello again\n"
    assert stat.S_IMODE((root / "etc/hello").stat().st_mode) == 0o600
    assert not (root / "etc/gone").exists() and not (root / "etc/.wh.gone").exists()
    assert sorted(p.name for p in (root / "opq").iterdir()) == ["new"]  # opaque: lower content gone, upper kept
    assert os.readlink(root / "etc/link") == "hello"
    assert stat.S_IMODE((root / "bin/su").stat().st_mode) == 0o4755  # setuid kept
    assert (root / "usr/lib/libz.so.1").read_text() == "z"  # written through the image's own lib -> usr/lib
    assert (root / "lib").is_symlink()
    assert (root / "etc/hard").stat().st_ino == (root / "etc/hello").stat().st_ino
    assert stat.S_IMODE((root / "locked").stat().st_mode) == 0o555 and (root / "locked/inside").read_text() == "i"

    env = gpu_check.image_environment(image.config)
    assert env["LD_LIBRARY_PATH"].split(":") == ["/usr/local/nvidia/lib64", "/opt/lib"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["PATH"].startswith("/usr/bin:/bin")


def test_unknown_image_is_a_clear_error(gpu_check: ModuleType, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", "tiny", [(GZIP, [entry("a", b"a")])])
    with pytest.raises(gpu_check.CheckError, match=r"'nope' is not in store .* \(tags: tiny\)"):
        gpu_check.load_image(store, "nope")
    with pytest.raises(gpu_check.CheckError, match="no index.json"):
        gpu_check.load_image(tmp_path / "empty", "tiny")


@pytest.mark.parametrize(("entries", "why"), [
    ([entry("../evil", b"evil")], "'..' component"),
    ([directory("a/"), entry("a/../../evil", b"evil")], "'..' component"),
    ([entry("/etc/x", b"x")], "absolute path"),
    ([symlink("link", "../../.."), entry("link/file", b"x")], "out of the root"),
    ([symlink("link", "/../../.."), entry("link/evil", b"x")], "out of the root"),
    ([directory("d/"), symlink("d/up", "../.."), directory("d/up/evil/")], "out of the root"),
    ([entry("x", kind=tarfile.LNKTYPE, link="../../etc/passwd")], "'..' component"),
    ([entry(".wh.x", b""), symlink("link", "../.."), entry("link/.wh.evil", b"")], "out of the root"),
], ids=["dotdot", "dotdot-inside", "absolute", "symlink-escape", "absolute-symlink-climb",
        "nested-symlink-escape", "hardlink-escape", "whiteout-through-symlink"])
def test_hostile_layers_are_refused(gpu_check: ModuleType, tmp_path: Path,
                                    entries: list[tuple[tarfile.TarInfo, bytes | None]], why: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil").write_text("untouched")
    store = make_store(tmp_path / "store", "bad", [(GZIP, entries)])
    root = outside / "deeper" / "root"
    with pytest.raises(gpu_check.UnsafeLayer, match=f"refusing layer sha256:[0-9a-f]{{64}}: .*{why}"):
        gpu_check.unpack(gpu_check.load_image(store, "bad"), root)
    assert (outside / "evil").read_text() == "untouched"
    assert sorted(p.name for p in outside.iterdir()) == ["deeper", "evil"]
    assert [p.name for p in (outside / "deeper").iterdir()] == ["root"]
    assert not (outside / "deeper" / "root" / "evil").exists()


def test_a_symlink_inside_the_root_is_followed_not_refused(gpu_check: ModuleType, tmp_path: Path) -> None:
    """Absolute and relative links that stay inside the image are normal (usrmerge, alternatives)."""
    store = make_store(tmp_path / "store", "ok", [(GZIP, [
        directory("usr/"), directory("usr/bin/"), symlink("bin", "/usr/bin"), entry("bin/tool", b"t"),
        directory("opt/"), symlink("opt/up", ".."), entry("opt/up/top", b"top")])])
    root = tmp_path / "root"
    gpu_check.unpack(gpu_check.load_image(store, "ok"), root)
    assert (root / "usr/bin/tool").read_text() == "t"
    assert (root / "top").read_text() == "top"


def test_without_a_gpu_the_script_says_skipped(tmp_path: Path) -> None:
    if Path("/dev/nvidiactl").exists() or os.geteuid() != 0:
        pytest.skip("checks the no-GPU path, as root")
    store = make_store(tmp_path / "store", "tiny", [(GZIP, [entry("a", b"a")])])
    run = subprocess.run([sys.executable, str(SCRIPT), "--store", str(store), "tiny"],
                         check=False, capture_output=True, text=True)
    assert run.returncode == 77, run.stdout + run.stderr
    assert run.stdout.startswith("gpu_check: skipped: no NVIDIA GPU")
    missing = subprocess.run([sys.executable, str(SCRIPT), "--store", str(store), "nope"],
                             check=False, capture_output=True, text=True)
    assert missing.returncode == 2 and "'nope' is not in store" in missing.stderr


# -- the real thing -------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.integration
def test_gpu_image_computes_on_the_gpu(tmp_path: Path) -> None:
    """Skips only where no GPU exists (reported by `pytest -rs`, counted in the summary); on a
    GPU host it builds the committed recipe when the store does not hold it yet."""
    if not Path("/dev/nvidiactl").exists():
        pytest.skip("no NVIDIA GPU on this host (/dev/nvidiactl is missing)")
    if os.geteuid() != 0:
        message = "tools/gpu_check.py needs root (it mounts and chroots)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    store = Path(os.environ.get("DREAM_STORE") or REPO / ".dream" / "store")
    index = store / "index.json"
    tags = [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
            for m in json.loads(index.read_text())["manifests"]] if index.is_file() else []
    if "gpu-image" not in tags:
        project = make_project(tmp_path / "gpu", with_demo=False, with_gpu=True)
        project.doit("build:gpu-image")
        store = project.store
    run = subprocess.run([sys.executable, str(SCRIPT), "--store", str(store), "gpu-image"],
                         check=False, capture_output=True, text=True, timeout=900, cwd=REPO)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "saxpy ok" in output
