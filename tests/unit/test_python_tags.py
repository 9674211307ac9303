"""Which wheel of a release the image's interpreter installs (`dream.python.tags`)."""

from __future__ import annotations

import pytest

from dream.errors import DreamError
from dream.python.tags import best_wheel
from dream.python.target import PythonTarget

X86 = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")
ARM = PythonTarget("3.11", "manylinux_2_36_aarch64", "/usr/local")


def choose(filenames: list[str], target: PythonTarget = X86) -> str:
    return best_wheel("pkg 1.0", [(name, name) for name in filenames], target)


def test_charset_normalizers_three_wheels_give_the_cpython_build() -> None:
    # the three wheels uv lists for charset-normalizer 3.5.3 (the failure of issue 11, item 3)
    wheels = ["charset_normalizer-3.5.3-py3-none-any.whl",
              "charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
              "charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl"]
    assert choose(wheels) == wheels[2]
    assert choose(wheels[:2]) == wheels[1]  # abi3 beats a pure wheel


def test_a_cpython_manylinux_wheel_beats_a_pure_one() -> None:
    assert choose(["p-1.0-py3-none-any.whl", "p-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]) \
        == "p-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"


def test_abi3_beats_none_on_the_same_platform() -> None:
    assert choose(["p-1.0-cp311-none-manylinux_2_17_x86_64.whl", "p-1.0-cp311-abi3-manylinux_2_17_x86_64.whl"]) \
        == "p-1.0-cp311-abi3-manylinux_2_17_x86_64.whl"
    assert choose(["p-1.0-py3-none-any.whl", "p-1.0-cp38-abi3-manylinux_2_17_x86_64.whl"]) \
        == "p-1.0-cp38-abi3-manylinux_2_17_x86_64.whl"
    # pip's order: this interpreter's ``none`` build ranks before an older interpreter's abi3 one
    assert choose(["p-1.0-cp38-abi3-manylinux_2_17_x86_64.whl", "p-1.0-cp311-none-manylinux_2_17_x86_64.whl"]) \
        == "p-1.0-cp311-none-manylinux_2_17_x86_64.whl"


def test_a_newer_manylinux_beats_an_older_one_and_legacy_aliases_count() -> None:
    assert choose(["p-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "p-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"]) \
        == "p-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert choose(["p-1.0-cp311-cp311-manylinux1_x86_64.whl", "p-1.0-cp311-cp311-manylinux2014_x86_64.whl"]) \
        == "p-1.0-cp311-cp311-manylinux2014_x86_64.whl"


def test_a_wheel_for_a_newer_glibc_than_the_images_is_never_chosen() -> None:
    assert choose(["p-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", "p-1.0-py3-none-any.whl"]) == "p-1.0-py3-none-any.whl"


@pytest.mark.parametrize("foreign", ["p-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
                                     "p-1.0-cp311-cp311-manylinux_2_17_aarch64.whl",
                                     "p-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
                                     "p-1.0-cp311-cp311-win_amd64.whl",
                                     "p-1.0-cp311-cp311-linux_x86_64.whl"])
def test_a_wheel_for_another_platform_or_interpreter_is_never_chosen(foreign: str) -> None:
    assert choose([foreign, "p-1.0-py3-none-any.whl"]) == "p-1.0-py3-none-any.whl"
    with pytest.raises(DreamError) as error:
        choose([foreign])
    assert str(error.value) == "no wheel of pkg 1.0 fits Python 3.11 on manylinux_2_36_x86_64"


def test_an_arm64_image_takes_the_aarch64_wheel() -> None:
    wheels = ["p-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "p-1.0-cp311-cp311-manylinux_2_17_aarch64.whl",
              "p-1.0-py3-none-any.whl"]
    assert choose(wheels, ARM) == wheels[1]
    assert choose(wheels) == wheels[0]


def test_a_malformed_filename_never_fits() -> None:
    assert choose(["not-a-wheel.zip", "p-1.0-py3-none-any.whl"]) == "p-1.0-py3-none-any.whl"
