"""Which CUDA wheels a `cuda` layer locks: a toolkit release, its per-component pins, and the
pins the image's own Python requirements (torch, jax, cupy …) carry.

NVIDIA's ``cuda-toolkit`` meta-package names, per extra, the wheel of each component for that
release (``cublas`` → ``nvidia-cublas-cu12==12.8.4.1.*``). Those pins, for every component, are
constraints on the whole layer: a component the recipe did not list (cuDNN pulls cuBLAS and
NVRTC) must not float past the release. Frameworks pin wheels of their own (torch 2.8.0: CUDA
12.8.1's cuBLAS and nvJitLink, an older cuDNN); ``version: python`` takes those, and any other
mode checks that the python layers above still agree, so that a clash is one line naming the
cuda layer instead of the resolver's text from the python layer's lock.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream.builders.wheelset import resolve_keeping
from dream.download_cache import cache_dir
from dream.errors import DreamError
from dream.python.index import uv_environment
from dream.python.resolve import Wheel, normalize, resolve
from dream.python.target import PythonTarget
from dream.recipe.model import CUDA_FOLLOW

SEPARATE = {"cudnn": "nvidia-cudnn-cu{major}", "nccl": "nvidia-nccl-cu{major}",
            "cusparselt": "nvidia-cusparselt-cu{major}", "nvshmem": "nvidia-nvshmem-cu{major}"}
TOOLKIT = "cuda-toolkit"
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


@dataclass(frozen=True)
class Toolkit:
    """One ``cuda-toolkit`` release: its version and, per extra, {wheel name: specifier}."""

    version: str
    extras: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    def wheels_of(self, component: str) -> dict[str, str]:
        """The wheels a component's extra requires, or those of its separate wheel family."""
        if component in SEPARATE:
            return {SEPARATE[component].format(major=self.major): ""}
        if component not in self.extras or component == "all":
            known = ", ".join(sorted(set(self.extras) - {"all"}))
            raise DreamError(f"CUDA {self.version} has no component {component!r} "
                             f"(its cuda-toolkit has: {known})")
        return self.extras[component]

    def primary(self, component: str) -> str:
        """The component's own wheel: the first its extra pins exactly (``cufft`` also names
        nvJitLink, by a range, in some releases)."""
        wheels = self.wheels_of(component)
        exact = [name for name, spec in wheels.items() if spec.startswith("==")]
        return (exact or list(wheels))[0]

    def component_of(self, wheel: str) -> str | None:
        """nvidia-cublas-cu12 → cublas, by the extras of this release (None for other wheels)."""
        for family, pattern in SEPARATE.items():
            if wheel == pattern.format(major=self.major):
                return family
        return next((extra for extra in sorted(self.extras) if extra != "all"
                     and self.primary(extra) == wheel), None)

    def pins(self) -> dict[str, str]:
        """Every component wheel of the release with its specifier (several joined by ``,``;
        a machine marker kept only where every extra naming the wheel has it)."""
        specs: dict[str, list[str]] = {}
        markers: dict[str, set[str]] = {}
        for wheels in self.extras.values():
            for name, spec in wheels.items():
                specifier, _, marker = spec.partition(";")
                markers.setdefault(name, set()).add(marker.strip())
                if specifier and specifier not in specs.setdefault(name, []):
                    specs[name].append(specifier)
        return {name: ",".join(found) + (f"; {next(iter(markers[name]))}"
                                         if len(markers[name]) == 1 and "" not in markers[name] else "")
                for name, found in sorted(specs.items()) if found}


LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
MACHINES = ("x86_64", "aarch64")


def parse_requires_dist(lines: list[str]) -> dict[str, dict[str, str]]:
    """``Requires-Dist`` lines → {extra: {wheel name: specifier}} (parsed by `packaging`).

    Only what applies to a Linux image of either machine is kept: a line whose marker is
    false on Linux (a Windows-only wheel) is dropped for its extra. A line true on one machine
    only keeps its marker, after the specifier (``==1.2.*; platform_machine == "x86_64"``), so
    that the resolver, which knows the image's platform, decides."""
    from packaging.requirements import InvalidRequirement, Requirement  # lock time only
    extras: dict[str, dict[str, str]] = {}
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # a line of another shape names no component: nothing to pin
        if requirement.marker is None:
            continue  # no extra: cuda-toolkit has none, and it would pin no component
        for extra in sorted(set(_EXTRA.findall(str(requirement.marker)))):
            applies = [requirement.marker.evaluate({**LINUX, "platform_machine": machine, "extra": extra})
                       for machine in MACHINES]
            if not any(applies):
                continue
            spec = str(requirement.specifier)
            if not all(applies):
                machine = MACHINES[applies.index(True)]
                spec += f'; platform_machine == "{machine}"'
            extras.setdefault(extra, {})[normalize(requirement.name)] = spec
    return extras


@functools.lru_cache(maxsize=32)
def toolkit(specifier: str) -> Toolkit:
    """The newest ``cuda-toolkit`` release matching ``specifier`` (``==12.8.*``, ``==12.8.1``)
    with its extras, from pip's install report: metadata only, through the machine's pip
    configuration (pip fetches the release's 2 kB metadata wheel when the index serves no
    separate metadata file).

    An exact release's metadata is asked once per download cache (`cached_metadata`): an
    index never changes a release's files, so a relock that keeps CUDA starts no pip (0.9 s
    of a 3 s relock). A range (``==12.8.*``) is always asked: a newer release may match."""
    exact = _exact(specifier)
    metadata = cached_metadata(exact) if exact else None
    if metadata is None:
        metadata = _pip_metadata(specifier)
        if exact:
            _remember(exact, metadata)
    return Toolkit(metadata["version"], parse_requires_dist(metadata.get("requires_dist", [])))


METADATA_VERSION = 1  # of the cached file's shape


def metadata_dir() -> Path:
    """``$DREAM_CACHE/cuda-toolkit``: kept by ``gc --cache``, as the wheels' member lists are."""
    return cache_dir() / "cuda-toolkit"


def _exact(specifier: str) -> str | None:
    """The release an ``==X.Y.Z`` specifier names (None for a range, or an odd name)."""
    version = specifier.removeprefix("==")
    if version == specifier or not re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]*", version):
        return None
    return version


def cached_metadata(version: str) -> dict[str, Any] | None:
    """pip's report metadata (``version``, ``requires_dist``) kept for the release ``version``;
    None when absent or damaged (it is asked again)."""
    try:
        data = json.loads((metadata_dir() / f"{version}.json").read_text())
        if data.get("format") != METADATA_VERSION:
            return None
        metadata = data["metadata"]
        if not isinstance(metadata.get("version"), str) or not isinstance(metadata.get("requires_dist", []), list):
            return None
        return {"version": metadata["version"], "requires_dist": list(metadata.get("requires_dist", []))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _remember(version: str, metadata: dict[str, Any]) -> None:
    """Keep the metadata atomically (a killed lock leaves no half-written file); a cache that
    cannot be written only costs the next lock its pip run."""
    text = json.dumps({"format": METADATA_VERSION, "metadata": {
        "version": metadata["version"], "requires_dist": list(metadata.get("requires_dist", []))}})
    directory = metadata_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".tmp-", suffix=".json", delete=False) as out:
            out.write(text)
        os.replace(out.name, directory / f"{version}.json")
    except OSError:
        pass


def _pip_metadata(specifier: str) -> dict[str, Any]:
    """The metadata of pip's choice for ``cuda-toolkit<specifier>``, from its install report."""
    with tempfile.TemporaryDirectory(prefix="dream-cuda-") as scratch:
        report = Path(scratch) / "report.json"
        run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                              "--ignore-installed", "--only-binary", ":all:", "--quiet",
                              "--disable-pip-version-check", "--report", str(report),
                              f"{TOOLKIT}{specifier}"],
                             capture_output=True, text=True, env=uv_environment(), check=False)
        if run.returncode != 0 or not report.is_file():
            why = next((line.removeprefix("ERROR: ") for line in reversed(run.stderr.splitlines())
                        if line.startswith("ERROR")), run.stderr.strip()[-200:])
            wanted = specifier.lstrip("=").removesuffix(".*")
            raise DreamError(f"no cuda-toolkit release matches CUDA {wanted} (pip: {why})")
        metadata: dict[str, Any] = json.loads(report.read_text())["install"][0]["metadata"]
    return metadata


def toolkit_for(version: str, kept: str | None) -> Toolkit:
    """``12``/``12.8`` → the newest such release, ``12.8.1`` → that one; the previous lock's
    release ``kept`` while it still matches (so a new lock does not move CUDA)."""
    if kept and (kept == version or kept.startswith(version + ".")):
        return toolkit(f"=={kept}")
    return toolkit(f"=={version}.*")


def is_cuda_wheel(name: str) -> bool:
    return name.startswith("nvidia-") or name == TOOLKIT


def runtime_pin(pins: dict[str, str]) -> tuple[str, str] | None:
    """The CUDA runtime wheel among ``pins`` (``nvidia-cuda-runtime-cu12``, ``…-runtime``)."""
    return next(((n, v) for n, v in sorted(pins.items())
                 if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", n)), None)


def framework_pins(requirements: list[str], target: PythonTarget, keep: list[str]) -> dict[str, str]:
    """The CUDA wheels the python requirements resolve to on their own, {name: version}; the
    previous lock's versions are kept where they still fit, as the python layer will."""
    if not requirements:
        return {}
    wheels = resolve_keeping(requirements, target, [], keep, "the python layers' requirements")
    return {w.name: w.version for w in wheels if is_cuda_wheel(w.name)}


def followed_toolkit(framework: dict[str, str], target: PythonTarget, keep: list[str]) -> Toolkit:
    """The release whose pins agree with the framework's: the newest of the runtime's minor
    version that pins every framework wheel it names (torch 2.8.0 → 12.8.1, not 12.8.2), else
    the newest that pins the same runtime."""
    if TOOLKIT in framework:
        return toolkit(f"=={framework[TOOLKIT]}")
    runtime = runtime_pin(framework)
    if runtime is None:
        raise DreamError("`version: python` follows the python layers' CUDA, but their requirements "
                         "pin no CUDA runtime wheel (nvidia-cuda-runtime-cu12 …); set a CUDA "
                         'version such as "12.8"')
    minor = ".".join(runtime[1].split(".")[:2])
    newest = toolkit(f"=={minor}.*")
    extras = sorted({c for c in map(newest.component_of, framework) if c and c not in SEPARATE})
    pinned = [f"{n}=={v}" for n, v in sorted(framework.items())]
    try:
        wheels = resolve_keeping([f"{TOOLKIT}[{','.join(extras)}]=={minor}.*"], target, pinned,
                                 [p for p in keep if p.startswith(TOOLKIT + "==")], f"CUDA {minor}")
    except DreamError:
        wheels = resolve([f"{TOOLKIT}[cudart]=={minor}.*"], target, [f"{runtime[0]}=={runtime[1]}"],
                         f"a CUDA {minor} release with {runtime[0]} {runtime[1]}")
    version = next(w.version for w in wheels if w.name == TOOLKIT)
    return newest if version == newest.version else toolkit(f"=={version}")


@dataclass(frozen=True)
class Plan:
    """What to resolve: requirements, constraints, and where each pinned wheel's version came
    from (``version``, ``versions.<component>`` or ``python``), for error messages."""

    toolkit: Toolkit
    requirements: list[str]
    constraints: list[str]
    origin: dict[str, str]


def plan(release: Toolkit, components: list[str], overrides: dict[str, str],
         framework: dict[str, str]) -> Plan:
    """Each listed component at the recipe's ``versions`` pin, else the framework's, else the
    release's; every other wheel of the release constrained the same way."""
    chosen: dict[str, str] = {n: f"=={v}" for n, v in framework.items() if n != TOOLKIT}
    origin = {n: CUDA_FOLLOW for n in chosen}
    for component, version in sorted(overrides.items()):
        name = release.primary(component)
        chosen[name], origin[name] = f"=={version}.*", f"versions.{component}"
    requirements = [f"{TOOLKIT}=={release.version}"]
    for component in sorted(set(components)):
        for name, spec in release.wheels_of(component).items():
            requirements.append(name + chosen.get(name, spec))
    pins = {**release.pins(), **chosen}
    constraints = [name + spec for name, spec in sorted(pins.items())]
    return Plan(release, sorted(set(requirements)), constraints, origin)


@dataclass(frozen=True)
class Clash:
    """A cuda-layer wheel that a python requirement needs at another version."""

    wheel: str
    ours: str
    requirement: str
    theirs: str


def find_clash(wheels: list[Wheel], requirements: list[str], target: PythonTarget,
               keep: list[str]) -> Clash | None:
    """Whether the python requirements above still resolve with these CUDA wheels; if not,
    which requirement needs which wheel at which version. Found by resolving the requirements
    without the cuda layer and comparing pins, never by reading the resolver's message; None
    when they agree, or when the python requirements fail on their own (their layer says why)."""
    if not requirements:
        return None
    ours = {w.name: w.version for w in wheels}
    constraints = [f"{n}=={v}" for n, v in sorted(ours.items())]
    try:
        resolve_keeping(requirements, target, constraints, keep, "the python layers' requirements")
        return None
    except DreamError:
        pass
    try:
        alone = framework_pins(requirements, target, keep)
    except DreamError:
        return None
    for requirement in requirements:
        clash = _clash_of(requirement, ours, target)
        if clash:
            return clash
    return _first_difference(ours, alone, ", ".join(requirements))


def _clash_of(requirement: str, ours: dict[str, str], target: PythonTarget) -> Clash | None:
    """The wheel this one requirement needs at another version than ours (None if it fits)."""
    try:
        resolve([requirement], target, [f"{n}=={v}" for n, v in sorted(ours.items())])
        return None
    except DreamError:
        pass
    try:
        alone = {w.name: w.version for w in resolve([requirement], target)}
    except DreamError:
        return None
    for name in sorted(n for n in ours if n in alone and alone[n] != ours[n]):
        try:  # the wheel that on its own makes the requirement fail
            resolve([requirement], target, [f"{name}=={ours[name]}"])
        except DreamError:
            return Clash(name, ours[name], requirement, alone[name])
    return _first_difference(ours, alone, requirement)


def _first_difference(ours: dict[str, str], theirs: dict[str, str], requirement: str) -> Clash | None:
    differing = sorted(n for n in ours if n in theirs and theirs[n] != ours[n])
    return Clash(differing[0], ours[differing[0]], requirement, theirs[differing[0]]) if differing else None
