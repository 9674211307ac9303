"""Which wheels a `cuda` layer asks for: the toolkit's metadata, the plan of requirements and
constraints, the version forms of the recipe, and the clash line. No network: the toolkit
metadata below is the real `cuda-toolkit` 12.8.1/12.8.2.0 text, cut down."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream.builders import cuda_versions
from dream.builders.cuda import CudaBuilder, _clash_error
from dream.builders.cuda_versions import (Clash, Toolkit, followed_toolkit, parse_requires_dist, plan,
                                          runtime_pin, toolkit_for)
from dream.errors import DreamError
from dream.python.target import PythonTarget
from dream.recipe.load import load_recipe

TARGET = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")
LINUX = "(sys_platform == 'win32' or sys_platform == 'linux')"
REQUIRES_12_8_1 = [
    f"nvidia-cublas-cu12==12.8.4.1.*; {LINUX} and extra == 'all'",
    f"nvidia-cuda-nvrtc-cu12==12.8.93.*; {LINUX} and extra == 'all'",
    f"nvidia-cuda-runtime-cu12==12.8.90.*; {LINUX} and extra == 'all'",
    f"nvidia-nvjitlink-cu12==12.8.93.*; {LINUX} and extra == 'all'",
    "nvidia-cufile-cu12==1.13.1.3.*; (sys_platform == 'linux') and extra == 'all'",
    f"nvidia-cublas-cu12==12.8.4.1.*; {LINUX} and extra == 'cublas'",
    f"nvidia-cuda-runtime-cu12==12.8.90.*; {LINUX} and extra == 'cudart'",
    f"nvidia-cuda-nvrtc-cu12==12.8.93.*; {LINUX} and extra == 'nvrtc'",
    f"nvidia-nvjitlink-cu12==12.8.93.*; {LINUX} and extra == 'nvjitlink'",
    "nvidia-cufile-cu12==1.13.1.3.*; (sys_platform == 'linux') and extra == 'cufile'",
]
# 12.8.2.0's cufft extra also names nvJitLink, by a range
X86 = "(sys_platform == 'linux' and platform_machine == 'x86_64')"
REQUIRES_12_8_2 = [
    f"nvidia-cufft-cu12==11.3.3.83.*; {X86} and extra == 'cufft'",
    f"nvidia-nvjitlink-cu12<13,>=12.8.93; {X86} and extra == 'cufft'",
    f"nvidia-nvjitlink-cu12<13,>=12.8.93; {X86} and extra == 'nvjitlink'",
]
TK = Toolkit("12.8.1", parse_requires_dist(REQUIRES_12_8_1))


def test_requires_dist_gives_each_extra_its_wheels_and_pins() -> None:
    assert TK.extras["cublas"] == {"nvidia-cublas-cu12": "==12.8.4.1.*"}
    assert set(TK.extras["all"]) == {"nvidia-cublas-cu12", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12",
                                     "nvidia-nvjitlink-cu12", "nvidia-cufile-cu12"}
    ranged = parse_requires_dist(REQUIRES_12_8_2)
    x86 = '; platform_machine == "x86_64"'  # 12.8.2.0 names cuFFT for Linux on x86_64 only
    assert ranged["cufft"] == {"nvidia-cufft-cu12": "==11.3.3.83.*" + x86, "nvidia-nvjitlink-cu12": "<13,>=12.8.93" + x86}
    assert Toolkit("12.8.2.0", ranged).pins()["nvidia-cufft-cu12"] == "==11.3.3.83.*" + x86
    assert "nvidia-cufft-cu12" not in parse_requires_dist(["nvidia-cufft-cu12==1.0; sys_platform == 'win32' and extra == 'cufft'"]).get("cufft", {})
    assert parse_requires_dist(["nvidia-foo==1", "garbage ;;"]) == {}  # no extra: no component


def test_components_and_wheels_map_both_ways() -> None:
    ranged = Toolkit("12.8.2.0", parse_requires_dist(REQUIRES_12_8_2))
    assert ranged.primary("cufft") == "nvidia-cufft-cu12"  # the exact pin, not the nvJitLink range
    assert ranged.component_of("nvidia-nvjitlink-cu12") == "nvjitlink"
    assert TK.component_of("nvidia-cuda-runtime-cu12") == "cudart"
    assert TK.component_of("nvidia-cudnn-cu12") == "cudnn" and TK.component_of("torch") is None
    assert Toolkit("13.0.2").wheels_of("nccl") == {"nvidia-nccl-cu13": ""}
    with pytest.raises(DreamError, match=r"CUDA 12.8.1 has no component 'npp' \(its cuda-toolkit has: "
                                         r"cublas, cudart, cufile, nvjitlink, nvrtc\)"):
        TK.wheels_of("npp")


def test_a_plain_version_pins_the_listed_components_and_constrains_every_other() -> None:
    wanted = plan(TK, ["cudart", "cublas", "cudnn"], {}, {})
    assert wanted.requirements == ["cuda-toolkit==12.8.1", "nvidia-cublas-cu12==12.8.4.1.*",
                                   "nvidia-cuda-runtime-cu12==12.8.90.*", "nvidia-cudnn-cu12"]
    # cuDNN pulls NVRTC and nvJitLink: they must stay at the release's pins, not float
    assert "nvidia-cuda-nvrtc-cu12==12.8.93.*" in wanted.constraints
    assert "nvidia-nvjitlink-cu12==12.8.93.*" in wanted.constraints
    assert wanted.origin == {}


def test_framework_pins_and_recipe_versions_win_over_the_toolkit() -> None:
    framework = {"nvidia-cublas-cu12": "12.8.3.14", "nvidia-cudnn-cu12": "9.10.2.21", "cuda-toolkit": "12.8.1"}
    wanted = plan(TK, ["cublas", "cudnn", "nvrtc"], {"nvrtc": "12.8.61"}, framework)
    assert wanted.requirements == ["cuda-toolkit==12.8.1", "nvidia-cublas-cu12==12.8.3.14",
                                   "nvidia-cuda-nvrtc-cu12==12.8.61.*", "nvidia-cudnn-cu12==9.10.2.21"]
    assert "nvidia-cublas-cu12==12.8.3.14" in wanted.constraints
    assert "nvidia-cublas-cu12==12.8.4.1.*" not in wanted.constraints
    assert wanted.origin == {"nvidia-cublas-cu12": "python", "nvidia-cudnn-cu12": "python",
                             "nvidia-cuda-nvrtc-cu12": "versions.nvrtc"}


def _record_toolkit_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand in for the pip metadata lookup (our own function), recording what was asked."""
    asked: list[str] = []

    def lookup(specifier: str) -> Toolkit:
        asked.append(specifier)
        return TK
    monkeypatch.setattr(cuda_versions, "toolkit", lookup)
    return asked


def test_the_previous_release_is_kept_while_it_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _record_toolkit_lookups(monkeypatch)
    toolkit_for("12.8", "12.8.1")
    toolkit_for("12.9", "12.8.1")
    toolkit_for("12.8.1", None)
    toolkit_for("12", "12.8.1")
    assert asked == ["==12.8.1", "==12.9.*", "==12.8.1.*", "==12.8.1"]


def test_following_needs_a_runtime_pin_unless_the_framework_names_the_toolkit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _record_toolkit_lookups(monkeypatch)
    assert followed_toolkit({"cuda-toolkit": "12.8.1", "nvidia-cublas-cu12": "12.8.4.1"}, TARGET, []) is TK
    assert asked == ["==12.8.1"]
    with pytest.raises(DreamError, match="pin no CUDA runtime wheel"):
        followed_toolkit({"nvidia-nccl-cu12": "2.27.3"}, TARGET, [])
    pins = {"nvidia-cuda-runtime": "13.0.96", "nvidia-cublas": "13.1.0.3"}
    assert runtime_pin(pins) == ("nvidia-cuda-runtime", "13.0.96")


def _recipe(tmp_path: Path, cuda: str, python: str = "") -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / "x.yaml"
    path.write_text("layers:\n  - name: cuda\n    cuda: " + cuda + "\n" + python)
    return path


@pytest.mark.parametrize("written,read", [('"12"', "12"), ("12", "12"), ('"12.8.1"', "12.8.1"),
                                          ('"13.0.2.0"', "13.0.2.0"), ("python", "python")])
def test_version_forms(tmp_path: Path, written: str, read: str) -> None:
    path = _recipe(tmp_path, "{version: %s, components: [cudart]}" % written)
    recipe = load_recipe(path, tmp_path / "recipes")
    assert recipe.layers[0].spec["version"] == read


@pytest.mark.parametrize("written,line", [
    ('"11.8"', 'recipes/x.yaml:3: layers[0].cuda.version: must be a CUDA version such as 12, 12.8 or 12.8.1 '
               '(12 or newer), or `python` to follow the CUDA that the python layers\' requirements pin (got "11.8")'),
    ('"12.8.x"', 'recipes/x.yaml:3: layers[0].cuda.version: must be a CUDA version such as 12, 12.8 or 12.8.1 '
                 '(12 or newer), or `python` to follow the CUDA that the python layers\' requirements pin (got "12.8.x")'),
    ('"12", versions: {cublas: latest}', 'recipes/x.yaml:3: layers[0].cuda.versions.cublas: must be a wheel '
                                         'version such as 12.8.4.1, or a prefix such as 9.10 (got "latest")'),
])
def test_bad_versions_are_one_line_in_words(tmp_path: Path, written: str, line: str) -> None:
    path = _recipe(tmp_path, "{version: %s, components: [cudart]}" % written)
    with pytest.raises(DreamError) as caught:
        load_recipe(path, tmp_path)
    assert str(caught.value) == line
    assert "regex" not in str(caught.value) and "^" not in str(caught.value)


def test_lock_settings_change_only_with_what_the_lock_depends_on(tmp_path: Path) -> None:
    python = "  - name: py\n    python: {requirements: [torch==2.8.0]}\n"
    builder = CudaBuilder()
    plain = load_recipe(_recipe(tmp_path, '{version: "12.9", components: [cudart]}', python), tmp_path)
    assert builder.lock_inputs(plain.layers[0], plain, {}) == {  # as before: committed locks stay valid
        "version": "12.9", "components": ["cudart"], "min_layer_size": 16_000_000, "python": TARGET.key()}
    written = "{version: python, components: [cudart], versions: {cudnn: '9.10'}}"
    follow = load_recipe(_recipe(tmp_path, written, python), tmp_path)
    inputs = builder.lock_inputs(follow.layers[0], follow, {})
    assert inputs["follows"] == ["torch==2.8.0"] and inputs["versions"] == {"cudnn": "9.10"}


def test_a_clash_is_one_line_naming_the_layer_the_requirement_and_both_versions(tmp_path: Path) -> None:
    python = "  - name: py\n    python: {requirements: [torch==2.8.0]}\n"
    recipe = load_recipe(_recipe(tmp_path, '{version: "12.9", components: [cublas]}', python), tmp_path)
    clash = Clash("nvidia-cublas-cu12", "12.9.1.4", "torch==2.8.0", "12.8.4.1")
    wanted = plan(Toolkit("12.9.1", {"cublas": {"nvidia-cublas-cu12": "==12.9.1.4.*"}}), ["cublas"], {}, {})
    error = _clash_error(clash, recipe.layers[0], wanted, ("nvidia-cuda-runtime-cu12", "12.8.90"))
    assert str(error) == ("recipes/x.yaml:2: layers.cuda.cuda.version: nvidia-cublas-cu12 12.9.1.4 from CUDA "
                          "12.9.1 clashes with torch==2.8.0, which needs nvidia-cublas-cu12 12.8.4.1; use "
                          'version: python or version: "12.8"')
    pinned = plan(TK, ["cublas"], {"cublas": "12.9"}, {})
    error = _clash_error(Clash("nvidia-cublas-cu12", "12.9.1.4", "torch==2.8.0", "12.8.4.1"),
                         recipe.layers[0], pinned, None)
    assert str(error).startswith("recipes/x.yaml:2: layers.cuda.cuda.versions.cublas: nvidia-cublas-cu12 "
                                 "12.9.1.4 from versions.cublas clashes with torch==2.8.0")
    assert str(error).endswith('drop versions.cublas or set it to "12.8.4.1"')


def test_a_following_layer_suggests_a_per_component_version(tmp_path: Path) -> None:
    python = "  - name: py\n    python: {requirements: [jax==0.7.0]}\n"
    recipe = load_recipe(_recipe(tmp_path, "{version: python, components: [cublas]}", python), tmp_path)
    clash = Clash("nvidia-cublas-cu12", "12.8.4.1", "jax==0.7.0", "12.9.1.4")
    error = _clash_error(clash, recipe.layers[0], plan(TK, ["cublas"], {}, {}), None)
    assert str(error) == ("recipes/x.yaml:2: layers.cuda.cuda.version: nvidia-cublas-cu12 12.8.4.1 from CUDA "
                          "12.8.1 clashes with jax==0.7.0, which needs nvidia-cublas-cu12 12.9.1.4; "
                          'set versions.cublas: "12.9.1.4"')
