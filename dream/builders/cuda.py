"""`cuda` layers: CUDA libraries from NVIDIA's PyPI wheels, laid out for every kind of user.

The wheels install into the image's Python site directory, where frameworks look for the
``nvidia.*`` packages (cupy's cuda-pathfinder, torch). Plain programs find the same files,
without a second copy, through ``/usr/local/cuda/lib64`` links, which ``LD_LIBRARY_PATH`` and an
``ld.so.conf.d`` entry name. No wheel carries the driver (``libcuda.so.1``): the NVIDIA
container runtime injects it, or the user mounts a host folder, and ``dream-cuda-env`` (the
image's entrypoint wrapper) makes either findable at container start.

Versions come from NVIDIA's ``cuda-toolkit`` meta-package, whose extras pin a compatible wheel
per component; cuDNN, NCCL, cuSPARSELt and NVSHMEM are separate wheel families.
"""

from __future__ import annotations

import posixpath
import re
from importlib import resources
from typing import Any

from dream.builders.base import BuildContext, Part
from dream.builders.wheelset import lock_wheels, pins, provided_by, resolve_keeping, wheel_parts
from dream.oci.image import DEFAULT_PATH
from dream.oci.tree import Tree
from dream.python.resolve import Wheel
from dream.python.target import PythonTarget
from dream.recipe.model import LayerSpec, Recipe

SEPARATE = {"cudnn": "nvidia-cudnn-cu{major}", "nccl": "nvidia-nccl-cu{major}",
            "cusparselt": "nvidia-cusparselt-cu{major}", "nvshmem": "nvidia-nvshmem-cu{major}"}
CUDA_HOME = "/usr/local/cuda"
DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib")
ENV_SCRIPT = "/usr/local/bin/dream-cuda-env"
GLUE_VERSION = "1"


def requirements(version: str, components: list[str]) -> list[str]:
    """``12.9`` + [cudart, cublas, cudnn] → cuda-toolkit[cublas,cudart]==12.9.*, nvidia-cudnn-cu12."""
    major = version.split(".")[0]
    extras = sorted(c for c in components if c not in SEPARATE)
    toolkit = "cuda-toolkit" + (f"[{','.join(extras)}]" if extras else "") + f"=={version}.*"
    return [toolkit] + [SEPARATE[c].format(major=major) for c in sorted(set(components) & set(SEPARATE))]


def component(wheel: Wheel) -> str:
    """nvidia-cuda-runtime-cu12 → runtime, nvidia-cublas → cublas, nvidia-cudnn-cu13 → cudnn."""
    name = re.sub(r"-cu\d+$", "", wheel.name)
    return re.sub(r"^(nvidia-cuda-|nvidia-)", "", name)


class CudaBuilder:
    kind = "cuda"
    version = f"1+glue{GLUE_VERSION}"
    needs_lock = True

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe) -> Any:
        spec = layer.spec
        return {"version": spec["version"], "components": sorted(spec["components"]),
                "min_layer_size": spec["min_layer_size"], "python": PythonTarget.of(recipe).key()}

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        spec, target = layer.spec, PythonTarget.of(recipe)
        wheels = resolve_keeping(requirements(spec["version"], spec["components"]), target, [],
                                 pins(previous), f"CUDA {spec['version']} ({', '.join(spec['components'])})")
        locked = lock_wheels(wheels, spec["min_layer_size"], target, provided_by(earlier, target))
        toolkit = next(w.version for w in locked if w.name == "cuda-toolkit")
        return {"cuda": toolkit, "wheels": [w.as_dict() for w in locked]}

    def parts(self, ctx: BuildContext) -> list[Part]:
        wheels = [Wheel.from_dict(w) for w in ctx.lock["wheels"]]
        libs = sorted(lib for w in wheels for lib in w.libs if lib not in w.drop)
        return wheel_parts(ctx, wheels, ctx.layer.spec["min_layer_size"], component,
                           extra_top=lambda tree: add_glue(tree, libs),
                           extra_inputs={"glue": GLUE_VERSION, "libs": libs})

    def config(self, ctx: BuildContext) -> dict[str, dict[str, str]]:
        """What the NVIDIA container runtime reads, and what nix2gpu's images carry."""
        version = ".".join(ctx.lock["cuda"].split(".")[:3])
        major_minor = ".".join(version.split(".")[:2])
        labels = {"com.nvidia.cuda.version": version, "com.nvidia.volumes.needed": "nvidia_driver"}
        cudnn = [w["version"] for w in ctx.lock["wheels"] if w["name"].startswith("nvidia-cudnn")]
        if cudnn:
            labels["com.nvidia.cudnn.version"] = cudnn[0]
        env = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
               "NVIDIA_REQUIRE_CUDA": f"cuda>={major_minor}", "CUDA_VERSION": version,
               "LD_LIBRARY_PATH": ":".join((f"{CUDA_HOME}/lib64",) + DRIVER_DIRS),
               "PATH": f"/usr/local/nvidia/bin:{CUDA_HOME}/bin:{DEFAULT_PATH}"}
        return {"env": env, "labels": labels}


def add_glue(tree: Tree, libs: list[str]) -> None:
    """``/usr/local/cuda/lib64`` links (versioned and unversioned), the ld.so.conf.d entry and
    the entrypoint wrapper that finds the driver."""
    names = {posixpath.basename(lib) for lib in libs}
    for lib in libs:
        name = posixpath.basename(lib)
        tree.add_symlink(f"{CUDA_HOME}/lib64/{name}", "/" + lib)
        unversioned = name.split(".so")[0] + ".so"
        if unversioned not in names:
            names.add(unversioned)
            tree.add_symlink(f"{CUDA_HOME}/lib64/{unversioned}", name)
    conf = "".join(f"{d}\n" for d in (f"{CUDA_HOME}/lib64",) + DRIVER_DIRS)
    tree.add_bytes("/etc/ld.so.conf.d/dream-cuda.conf", conf.encode())
    script = resources.files("dream.builders").joinpath("dream-cuda-env.sh").read_bytes()
    tree.add_bytes(ENV_SCRIPT, script, 0o755)
