"""Unit tests of the GPU-image logic that needs no network: the split rule, wheel paths, the
CUDA requirement mapping, platform tags, PAM profiles and the home account merge."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from dream.builders.cuda import component
from dream.builders.home import _add_accounts
from dream.builders.wheelset import split
from dream.debian.fixups import pam_common
from dream.errors import DreamError, Location
from dream.oci.tree import Tree
from dream.python.resolve import Wheel, normalize
from dream.python.target import PythonTarget
from dream.python.wheels import install_paths

TARGET = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")


def wheel(name: str, size: int) -> Wheel:
    return Wheel(name, "1", f"{name}-1-py3-none-any.whl", name * 2, size)


def test_split_gives_big_wheels_own_layers_and_small_ones_a_shared_top() -> None:
    groups = split([wheel("rich", 10), wheel("torch", 900), wheel("numpy", 17), wheel("mdurl", 1)], 16, 11)
    assert [(big.name if big else None, [w.name for w in group]) for big, group in groups] == [
        ("numpy", ["numpy"]), ("torch", ["torch"]), (None, ["mdurl", "rich"])]
    assert split([wheel("torch", 900)], 16, 11)[-1][0] is not None  # no empty small layer


def test_cuda_wheels_get_short_layer_names() -> None:
    # which wheels the components lock: tests/unit/test_cuda_versions.py
    assert [component(wheel(n, 0)) for n in ("nvidia-cuda-runtime-cu12", "nvidia-cublas", "nvidia-cudnn-cu13")] == [
        "runtime", "cublas", "cudnn"]


def test_platform_tags_include_older_glibc_and_legacy_aliases() -> None:
    tags = TARGET.platforms()
    assert tags[0] == "manylinux_2_36_x86_64" and tags[-1] == "manylinux1_x86_64"
    assert "manylinux2014_x86_64" in tags and "manylinux_2_17_x86_64" in tags
    assert TARGET.uv_platform() == "x86_64-manylinux_2_36"
    assert normalize("Cupy_CUDA12x") == "cupy-cuda12x"


def test_wheel_members_map_to_image_paths(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("demo/__init__.py", "demo-1.0.data/scripts/tool", "demo-1.0.data/headers/demo.h",
                     "demo-1.0.data/data/share/demo.txt", "demo-1.0.dist-info/METADATA"):
            archive.writestr(name, "x")
    assert install_paths(zipfile.ZipFile(path).namelist(), TARGET) == [
        "usr/local/lib/python3.11/dist-packages/demo/__init__.py", "usr/local/bin/tool",
        "usr/local/include/python3.11/demo/demo.h", "usr/local/share/demo.txt",
        "usr/local/lib/python3.11/dist-packages/demo-1.0.dist-info/METADATA"]


UNIX_PROFILE = """Name: Unix authentication
Default: yes
Priority: 256
Auth-Type: Primary
Auth:
\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass
Account-Type: Primary
Account:
\t[success=end new_authtok_reqd=done default=ignore]\tpam_unix.so
Session-Type: Additional
Session:
\trequired\tpam_unix.so
"""


def test_pam_common_files_follow_pam_auth_update() -> None:
    tree = Tree()
    tree.add_bytes("usr/share/pam-configs/unix", UNIX_PROFILE.encode())
    tree.add_bytes("usr/share/pam-configs/mkhomedir", b"Name: x\nDefault: no\nSession-Type: Additional\n"
                   b"Session:\n\toptional\tpam_mkhomedir.so\n")
    pam_common(tree)
    auth = tree.get("etc/pam.d/common-auth").data.decode().splitlines()[1:]
    assert auth == ["auth\t[success=1 default=ignore]\tpam_unix.so nullok try_first_pass",
                    "auth\trequisite\t\t\tpam_deny.so", "auth\trequired\t\t\tpam_permit.so"]
    session = tree.get("etc/pam.d/common-session").data.decode()
    assert session.endswith("session\trequired\tpam_unix.so\n") and "mkhomedir" not in session
    assert tree.get("etc/pam.d/common-session").data.decode().count("[default=1]") == 1


class _Ctx:
    class layer:
        name = "home"
        location = Location("layers/home-default.yaml", 3)


BASE = {"etc/passwd": [["root", "x", "0", "0", "root", "/root", "/bin/bash"]],
        "etc/group": [["root", "x", "0", ""], ["sudo", "x", "27", ""], ["shadow", "x", "42", ""]],
        "etc/shadow": [["root", "*", "0", "0", "99999", "7", "", "", ""]],
        "etc/gshadow": [["root", "*", "", ""], ["sudo", "*", "", ""], ["shadow", "*", "", ""]]}
SPEC = {"user": "dev", "uid": 1000, "gid": 1000, "home": "/home/dev", "shell": "/bin/bash", "groups": ["sudo"]}


def test_home_account_joins_the_base_accounts() -> None:
    tree = Tree()
    _add_accounts(tree, SPEC, BASE, _Ctx())
    assert tree.get("etc/passwd").data.decode().splitlines()[-1] == "dev:x:1000:1000:dev:/home/dev:/bin/bash"
    assert tree.get("etc/group").data.decode().splitlines() == [
        "root:x:0:", "sudo:x:27:dev", "shadow:x:42:", "dev:x:1000:"]
    assert tree.get("etc/gshadow").data.decode().splitlines()[1] == "sudo:*::dev"
    shadow = tree.get("etc/shadow")
    assert (shadow.mode, shadow.gid) == (0o640, 42)


@pytest.mark.parametrize("change, message", [
    ({"user": "root"}, "home.user: user 'root' already exists"),
    ({"uid": 0}, "home.uid: uid 0 is already used"),
    ({"groups": ["docker"]}, "home.groups: no such group in the base system: docker"),
])
def test_home_account_mistakes_are_one_clear_line(change: dict, message: str) -> None:
    with pytest.raises(DreamError) as caught:
        _add_accounts(Tree(), {**SPEC, **change}, BASE, _Ctx())
    assert str(caught.value).startswith("layers/home-default.yaml:3: layers.home")
    assert message in str(caught.value)
