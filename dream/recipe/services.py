"""Services and deployments after the schema: defaults filled, files read, and the checks a
schema cannot make (unknown or cyclic dependencies, a `healthy` wait on a service with no
readiness probe, a deployment that leaves out a dependency), each reported at its line."""

from __future__ import annotations

import base64
import posixpath
from pathlib import Path
from typing import Any

from dream.errors import DreamError
from dream.recipe import facts
from dream.recipe.model import Deployment
from dream.recipe.paths import PathRefused, lexically_below, runtime_path
from dream.recipe.services_schema import RENDERER_OPTIONS, option_defaults
from dream.recipe.yamlsource import Lines, PathKey, dotted, host_path, location_of


class _Checker:
    def __init__(self, lines: Lines, root: Path) -> None:
        self.lines, self.root = lines, root
        self.errors: list[DreamError] = []

    def error(self, message: str, at: PathKey) -> None:
        self.errors.append(DreamError(message, location_of(self.lines, at), dotted(at)))

    def below(self, value: str, at: PathKey, where: str = "the deployment's root", on_host: bool = True) -> None:
        """dream/recipe/paths.py's rule for a path below a deployment's root (the project here,
        ``/`` in an image) or, with ``on_host=False``, below a folder dream creates."""
        try:
            if on_host:
                runtime_path(value, self.root, where)
            elif not lexically_below(value) or "\0" in value:
                raise PathRefused(f"must name something below {where} (got {value!r})")
        except PathRefused as exc:
            self.error(str(exc), at)


def normalize(doc: dict[str, Any], recipe_name: str, lines: Lines, root: Path) -> tuple[dict[str, Deployment], list[DreamError]]:
    """The recipe's deployments (an implicit one named like the recipe when it has services but
    names no deployment), and every problem found."""
    check = _Checker(lines, root)
    services = {name: _service(name, spec, check) for name, spec in doc.get("services", {}).items()}
    for name, spec in services.items():
        _check_dependencies(name, spec, services, check)
    _check_cycles(services, check)
    _check_seeds(services, check)
    declared = doc.get("deployments", {})
    if not declared and services:
        declared = {recipe_name: {"default": False, "env": {}, "port_base": 5000}}
    deployments = {}
    for name, spec in declared.items():
        members = spec.get("services", list(services))
        at = ("deployments", name)
        if "log_dir" in spec:
            check.below(spec["log_dir"], at + ("log_dir",))
        for index, member in enumerate(members):
            if member not in services:
                check.error(f"no service named {member!r}", at + ("services", index))
        chosen = {m: services[m] for m in members if m in services}
        for member, settings in chosen.items():
            for dependency in settings["depends_on"]:
                if dependency in services and dependency not in chosen:
                    check.error(f"{member} depends on {dependency}, which this deployment leaves out",
                                at + ("services",))
        if "PORT" in spec.get("env", {}):
            check.error("PORT is set per process; choose the first one with port_base", at + ("env", "PORT"))
        if not chosen and not check.errors:
            check.error("a deployment needs at least one service", at)
        port_base = spec.get("port_base", 5000)
        last_port = port_base + 100 * (len(chosen) - 1) + max((s["replicas"] for s in chosen.values()), default=1) - 1
        if chosen and last_port > 65535:
            check.error(f"its last process would get PORT={last_port}, above 65535 (each service "
                        "takes 100 more, each replica 1 more); lower port_base", at + ("port_base",))
        deployments[name] = Deployment(
            name=name, services=chosen, env=dict(spec.get("env", {})), port_base=port_base,
            default=spec.get("default", False), user=spec.get("user"), log_dir=spec.get("log_dir"),
            options={renderer: {**option_defaults(rule), **spec.get(renderer, {})}
                     for renderer, rule in RENDERER_OPTIONS.items()},
            location=location_of(lines, at) if name in doc.get("deployments", {}) else location_of(lines, ("services",)),
            recipe=recipe_name)
    return deployments, check.errors


AGE_MAGIC = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")


def _secret(item: dict[str, Any], at: PathKey, check: _Checker) -> dict[str, Any]:
    """A secret with its ciphertext (base64) in place of ``src``; a file that is not age's
    (a plaintext secret committed by mistake) is refused, so it never reaches a plan."""
    item = dict(item)
    data = b""
    try:
        source = host_path(check.lines, at + ("src",), item.pop("src"), check.root)
        data = facts.read_bytes(source)
    except DreamError as exc:
        check.errors.append(exc)
    except OSError as exc:
        check.error(f"cannot read it: {exc.strerror}", at + ("src",))
    else:
        if not data.startswith(AGE_MAGIC):
            check.error(f"{source.name} is not encrypted with age (encrypt it: `age -r <recipient> -o "
                        f"{source.name}.age {source.name}`, and commit only the .age file)", at + ("src",))
            data = b""
    item["ciphertext"] = base64.b64encode(data).decode()
    item["mode"] = int(item["mode"], 8)
    return item


def _service(name: str, spec: dict[str, Any], check: _Checker) -> dict[str, Any]:
    at = ("services", name)
    spec = dict(spec)
    spec["config_files"] = [_file(item, at + ("config_files", index), "the service's config folder", check)
                            for index, item in enumerate(spec["config_files"])]
    volumes = []
    for index, volume in enumerate(spec["volumes"]):
        check.below(volume["path"], at + ("volumes", index, "path"))
        volume = dict(volume)
        volume["seed"] = [_file(item, at + ("volumes", index, "seed", n), "the volume", check)
                          for n, item in enumerate(volume.get("seed", []))]
        volumes.append(volume)
    spec["volumes"] = volumes
    spec["secrets"] = [_secret(item, at + ("secrets", index), check) for index, item in enumerate(spec["secrets"])]
    for index, name in enumerate(spec["env_files"]):
        check.below(name, at + ("env_files", index))
    if "log_file" in spec:
        check.below(spec["log_file"], at + ("log_file",))
    if spec["oneshot"] and spec["restart"] == "always":
        check.error("a oneshot task cannot restart always (it is meant to finish)", at + ("restart",))
    for probe in ("readiness", "liveness"):
        if spec["oneshot"] and probe in spec:
            check.error(f"a oneshot task has no {probe} probe (others wait for it to complete)", at + (probe,))
    return spec


def _file(item: dict[str, Any], at: PathKey, where: str, check: _Checker) -> dict[str, Any]:
    """A config file or a volume's seed file: its path checked below ``where``, a ``src`` read
    into ``content`` (inside the project, UTF-8 text)."""
    item = dict(item)
    check.below(item["path"], at + ("path",), where, on_host=False)
    if "src" in item:
        try:
            source = host_path(check.lines, at + ("src",), item.pop("src"), check.root)
            item["content"] = facts.read_text(source)
        except DreamError as exc:
            check.errors.append(exc)
            item["content"] = ""
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            check.error(f"cannot read {source}: {reason}", at + ("src",))
            item["content"] = ""
    return item


def _check_seeds(services: dict[str, dict[str, Any]], check: _Checker) -> None:
    """One service seeds a volume path: two seeding the same one would race (which files end up
    there would depend on which container starts first)."""
    seeded: dict[str, str] = {}
    for name, spec in services.items():
        for index, volume in enumerate(spec["volumes"]):
            if not volume["seed"]:
                continue
            path = posixpath.normpath(volume["path"])
            first = seeded.setdefault(path, name)
            if first != name:
                check.error(f"volume {path} is seeded by service {first} already; seed it in one service only",
                            ("services", name, "volumes", index, "seed"))


def _check_dependencies(name: str, spec: dict[str, Any], services: dict[str, dict[str, Any]],
                        check: _Checker) -> None:
    for dependency, condition in spec["depends_on"].items():
        at = ("services", name, "depends_on", dependency)
        target = services.get(dependency)
        if target is None:
            check.error(f"no service named {dependency!r}", at)
        elif dependency == name:
            check.error("a service cannot depend on itself", at)
        elif condition == "healthy" and target["oneshot"]:
            check.error(f"{dependency} is a oneshot task: wait for `completed_successfully`", at)
        elif condition == "healthy" and "readiness" not in target:
            check.error(f"{dependency} has no readiness probe, so it never becomes healthy "
                        "(add one, or wait for `started`)", at)


def _check_cycles(services: dict[str, dict[str, Any]], check: _Checker) -> None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dependency in services[name]["depends_on"]:
            if dependency not in services or dependency == name:
                continue  # unknown or itself: reported by _check_dependencies
            if state.get(dependency) == 1:
                cycle = path[path.index(dependency):] + [dependency] if dependency in path else [name, dependency]
                check.error("dependency cycle: " + " -> ".join(cycle), ("services", name, "depends_on", dependency))
            elif dependency not in state:
                visit(dependency, path + [dependency])
        state[name] = 2

    for name in services:
        if name not in state:
            visit(name, [name])
