"""`cuda` layers: CUDA libraries from NVIDIA's PyPI wheels, laid out for every kind of user.

The wheels install into the image's Python site directory, where frameworks look for the
``nvidia.*`` packages (cupy's cuda-pathfinder, torch). Plain programs find the same files,
without a second copy, through ``/usr/local/cuda/lib64`` links, which ``LD_LIBRARY_PATH`` and an
``ld.so.conf.d`` entry name. No wheel carries the driver (``libcuda.so.1``): the NVIDIA
container runtime injects it, or the user mounts a host folder, and ``dream-cuda-env`` (the
image's entrypoint wrapper) makes either findable at container start.

Versions come from NVIDIA's ``cuda-toolkit`` meta-package, whose extras pin a compatible wheel
per component (cuDNN, NCCL, cuSPARSELt and NVSHMEM are separate wheel families), or, with
``version: python``, from the pins of the image's Python requirements (torch, jax …); see
`dream.builders.cuda_versions`.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from importlib import resources
from typing import TYPE_CHECKING, Any, Mapping

from dream.builders.base import BuildContext, LayerBuilder, Part
from dream.builders.wheelset import lock_wheels, pins, provided_by, resolve_keeping, wheel_parts
from dream.errors import DreamError
from dream.oci.digest import canonical_json
from dream.oci.image import DEFAULT_PATH
from dream.oci.tree import Tree
from dream.python.resolve import Wheel, resolve
from dream.python.target import PythonTarget
from dream.recipe.model import CUDA_FOLLOW, LayerSpec, Recipe

if TYPE_CHECKING:  # imported where a lock needs them: a build never resolves CUDA versions
    from dream.builders.cuda_versions import Clash, Plan

CUDA_HOME = "/usr/local/cuda"
DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib")
ENV_SCRIPT = "/usr/local/bin/dream-cuda-env"
GLUE_VERSION = "1"


def component(wheel: Wheel) -> str:
    """nvidia-cuda-runtime-cu12 → runtime, nvidia-cublas → cublas, nvidia-cudnn-cu13 → cudnn."""
    name = re.sub(r"-cu\d+$", "", wheel.name)
    return re.sub(r"^(nvidia-cuda-|nvidia-)", "", name)


class CudaBuilder(LayerBuilder):
    kind = "cuda"
    version = f"1+glue{GLUE_VERSION}"
    needs_lock = True
    resolves_together = True  # cuda and python pins constrain each other (dream.lock)

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        """The settings the lock entry was resolved from. A layer that follows the python
        layers holds their requirements too, so a new torch re-locks the CUDA it follows;
        ``versions`` only when set, so that older locks stay valid."""
        spec = layer.spec
        inputs = {"version": spec["version"], "components": sorted(spec["components"]),
                  "min_layer_size": spec["min_layer_size"], "python": PythonTarget.of(recipe).key()}
        if spec.get("versions"):
            inputs["versions"] = dict(sorted(spec["versions"].items()))
        if spec["version"] == CUDA_FOLLOW:
            inputs["follows"] = python_requirements(layer, recipe)
        return inputs

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        from dream.builders.cuda_versions import find_clash, framework_pins, runtime_pin
        spec, target, keep = layer.spec, PythonTarget.of(recipe), pins(previous)
        above = python_requirements(layer, recipe)
        try:
            wanted = _plan(layer, above, target, keep)
            wheels = resolve_keeping(wanted.requirements, target, wanted.constraints, keep,
                                     f"CUDA {wanted.toolkit.version} ({', '.join(spec['components'])})")
        except DreamError as exc:
            raise _located(exc, layer, "version") from None
        clash = find_clash(wheels, above, target, keep)
        if clash:
            raise _clash_error(clash, layer, wanted, runtime_pin(framework_pins(above, target, keep)))
        locked = lock_wheels(wheels, spec["min_layer_size"], target, provided_by(earlier, target))
        entry: dict[str, Any] = {"cuda": wanted.toolkit.version, "wheels": [w.as_dict() for w in locked]}
        if spec["version"] == CUDA_FOLLOW:  # what `still_holds` compares a later lock with
            entry["followed"] = {"pins": framework_pins(above, target, keep),
                                 "settings": self._unfollowed(layer, recipe)}
        return entry

    def still_holds(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any],
                    previous: dict[str, Any]) -> bool:
        """A layer that follows the python layers needs no resolving when only their
        requirements changed (one more small package) and the CUDA pins they resolve to did
        not: the toolkit release and the wheels come from those pins, so they would be the
        same. The question is the one the python layer above then asks first (its
        requirements on these wheels' pins, then the previous lock's: `PythonBuilder.lock`),
        so uv answers it once: one resolution instead of four."""
        from dream.builders.cuda_versions import is_cuda_wheel
        followed = entry.get("followed")
        if layer.spec["version"] != CUDA_FOLLOW or not isinstance(followed, dict) \
                or followed.get("settings") != self._unfollowed(layer, recipe):
            return False
        ours = [f"{w['name']}=={w['version']}" for w in entry["wheels"]]
        try:
            wheels = resolve(python_requirements(layer, recipe), PythonTarget.of(recipe), ours + pins(previous))
        except DreamError:
            return False  # resolving the layers says what is wrong
        return {w.name: w.version for w in wheels if is_cuda_wheel(w.name)} == followed.get("pins")

    def _unfollowed(self, layer: LayerSpec, recipe: Recipe) -> str:
        """The hash of the lock settings less the followed requirements."""
        inputs = {k: v for k, v in self.lock_inputs(layer, recipe, {}).items() if k != "follows"}
        return hashlib.sha256(canonical_json(inputs)).hexdigest()

    def parts(self, ctx: BuildContext) -> list[Part]:
        wheels = [Wheel.from_dict(w) for w in ctx.lock["wheels"]]
        libs = sorted(lib for w in wheels for lib in w.libs if lib not in w.drop)
        return wheel_parts(ctx, wheels, ctx.layer.spec["min_layer_size"],
                           ctx.layer.spec["small_layer_size"], component,
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


def python_requirements(layer: LayerSpec, recipe: Recipe) -> list[str]:
    """The requirements of the image's python layers above this cuda layer, in layer order:
    what a framework's CUDA is read from, and what must agree with this layer's wheels."""
    above = recipe.layers[recipe.layers.index(layer) + 1:]
    return [r for other in above if other.kind == "python" for r in other.spec["requirements"]]


def _plan(layer: LayerSpec, above: list[str], target: PythonTarget, keep: list[str]) -> Plan:
    """The toolkit release and wheels to resolve, for the layer's `version`."""
    from dream.builders.cuda_versions import followed_toolkit, framework_pins, plan, toolkit_for
    spec = layer.spec
    kept = next((p.split("==", 1)[1] for p in keep if p.startswith("cuda-toolkit==")), None)
    if spec["version"] != CUDA_FOLLOW:
        return plan(toolkit_for(spec["version"], kept), spec["components"], spec.get("versions", {}), {})
    if not above:
        raise DreamError("`version: python` follows the python layers above this one, but there "
                         "are none; name a CUDA version such as \"12.8\" or add a python layer after it")
    framework = framework_pins(above, target, keep)
    return plan(followed_toolkit(framework, target, keep), spec["components"],
                spec.get("versions", {}), framework)


def _located(exc: DreamError, layer: LayerSpec, field: str) -> DreamError:
    """The error with the cuda layer's location and field path, unless it has its own."""
    if exc.location is not None:
        return exc
    return DreamError(exc.message, layer.location, f"layers.{layer.name}.cuda.{field}")


def _clash_error(clash: Clash, layer: LayerSpec, wanted: Plan, runtime: tuple[str, str] | None) -> DreamError:
    """One line: the cuda layer's wheel and where its version came from, the requirement, its
    version, and the setting that would agree."""
    origin = wanted.origin.get(clash.wheel, "version")
    field = origin if origin.startswith("versions.") else "version"
    source = {"version": f"CUDA {wanted.toolkit.version}", CUDA_FOLLOW: "the python layers"}.get(origin, origin)
    if field != "version":
        fix = f'drop {field} or set it to "{clash.theirs}"'
    elif layer.spec["version"] == CUDA_FOLLOW:
        fix = f'set versions.{wanted.toolkit.component_of(clash.wheel) or clash.wheel}: "{clash.theirs}"'
    else:
        fix = "use version: python" + (f' or version: "{".".join(runtime[1].split(".")[:2])}"' if runtime else "")
    return DreamError(f"{clash.wheel} {clash.ours} from {source} clashes with {clash.requirement}, "
                      f"which needs {clash.wheel} {clash.theirs}; {fix}",
                      layer.location, f"layers.{layer.name}.cuda.{field}")


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
