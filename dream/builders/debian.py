"""`debian` layers: a root filesystem from pinned Debian packages, no scripts run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dream.builders.base import BuildContext, LayerBuilder, Part
from dream.debian.fixups import FIXUPS_VERSION, apply_fixups
from dream.errors import DreamError
from dream.fetch_plan import Download, Source
from dream.oci.tree import Tree
from dream.recipe.model import LayerSpec, Recipe

if TYPE_CHECKING:  # apt runs to lock, fetch and build: every doit command imports this module
    from dream.debian.apt import Package, VanishedPins


class DebianBuilder(LayerBuilder):
    kind = "debian"
    version = f"1+fixups{FIXUPS_VERSION}"
    needs_lock = True

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        spec = layer.spec
        inputs = {"packages": spec["packages"], "essential": spec["essential"],
                  "recommends": spec["recommends"], "architecture": recipe.image["architecture"]}
        if spec.get("suite"):  # only when set, so that older locks stay fresh
            inputs["suite"] = spec["suite"]
        return inputs

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        from dream.debian.apt import Apt, UnknownPackages
        spec = layer.spec
        apt = Apt(recipe.image["architecture"], suite=spec.get("suite"))
        apt.update()
        kept = {p["name"]: p["version"] for p in previous.get(layer.name, {}).get("packages", [])}
        try:
            packages = apt.resolve(spec["packages"], spec["essential"], spec["recommends"], prefer=kept)
        except UnknownPackages as exc:
            name = exc.names[0]  # merged lists renumber items: the line says where, not the index
            written = [re.split(r"[=:]", p, maxsplit=1)[0] for p in spec["packages"]]
            location = layer.at(f"packages[{written.index(name)}]")[0] if name in written else layer.location
            suite = f" ({spec['suite']})" if spec.get("suite") else ""
            raise DreamError(f"no Debian package {name!r} in the apt sources{suite}", location,
                             f"layers.{layer.name}.debian.packages") from None
        return {"architecture": apt.architecture, **({"suite": apt.suite} if apt.suite else {}),
                "packages": [p.as_dict() for p in packages]}

    def recheck(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any]) -> None:
        """A kept entry must still be buildable: every pin in the cache or the apt sources.
        The sources' lists are fetched only for pins the cache lacks: a relock of an image
        that was built (every .deb cached) spends no `apt-get update` (0.8 s) on its kept
        Debian layer."""
        from dream.debian.apt import Apt, Package, VanishedPins
        apt = Apt(entry["architecture"], suite=entry.get("suite"))
        packages = [Package(**p) for p in entry["packages"]]
        if apt.uncached(packages):
            apt.update()
        gone = apt.vanished(packages)
        if gone:
            raise DreamError(_vanished_hint(VanishedPins(gone), recipe.name), layer.location,
                             f"layers.{layer.name}")

    def parts(self, ctx: BuildContext) -> list[Part]:
        return [Part(ctx.layer.name, ctx.layer.comment, lambda: self.key_inputs(ctx), self.tree,
                     downloads=lambda: _downloads(ctx))]

    def key_inputs(self, ctx: BuildContext) -> Any:
        """The packages and what shapes their tree; with bytecode, the interpreter compiling
        it for each Python the packages hold (only then: a layer without Python, or with
        ``bytecode: false``, keeps the key it had before layers carried bytecode)."""
        packages = ctx.lock["packages"]
        inputs = {"exclude": ctx.layer.spec["exclude"], "architecture": ctx.lock["architecture"],
                  "packages": [[p["name"], p["version"], p["sha256"]] for p in packages]}
        versions = _bytecode_versions(ctx)
        if versions:
            from dream.python.bytecode import compiler_key
            inputs["bytecode"] = {version: compiler_key(version) for version in versions}
        return inputs

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        from dream.debian.apt import Package
        debs = _fetch(ctx, [Package(**p) for p in ctx.lock["packages"]])
        from dream.debian.unpack import unpack  # .deb readers: a no-op build needs none
        unpacked = unpack(debs, scratch)
        apply_fixups(unpacked, ctx.lock["architecture"])
        tree = unpacked.tree
        for pattern in ctx.layer.spec["exclude"]:
            tree.remove_matching(pattern)
        versions = _bytecode_versions(ctx)
        if versions:
            _add_bytecode(tree, versions, scratch, f"{ctx.recipe.name}/{ctx.layer.name}")
            for pattern in ctx.layer.spec["exclude"]:  # `*/__pycache__` and the like
                tree.remove_matching(pattern)
        return tree


_STDLIB = re.compile(r"^libpython(3\.\d+)-minimal$")  # Debian's package of /usr/lib/python3.X's core


def _bytecode_versions(ctx: BuildContext) -> list[str]:
    """The Python versions whose standard library the layer's packages install (none with
    ``bytecode: false``)."""
    if not ctx.layer.spec.get("bytecode", True):
        return []
    return sorted({m.group(1) for p in ctx.lock["packages"] if (m := _STDLIB.match(p["name"]))})


def _add_bytecode(tree: Tree, versions: list[str], scratch: Path, label: str) -> None:
    """What Debian's postinst scripts compile (py3compile, and each interpreter's standard
    library), compiled here as the python layers' modules are (`dream.python.bytecode`)."""
    from dream.python.bytecode import add_bytecode, tree_modules
    for version in versions:
        modules = tree_modules(tree, (f"usr/lib/python{version}", "usr/lib/python3/dist-packages"),
                               scratch / f"python{version}")
        add_bytecode(tree, modules, version, scratch / f"python{version}", label)


def _fetch(ctx: BuildContext, packages: list[Package]) -> dict[str, Path]:
    """The layer's .debs from the download cache, fetching those it lacks through apt."""
    from dream.debian.apt import Apt, VanishedPins
    try:
        return Apt(ctx.lock["architecture"], suite=ctx.lock.get("suite")).fetch(packages)
    except VanishedPins as exc:
        raise DreamError(_vanished_hint(exc, ctx.recipe.name), ctx.layer.location,
                         f"layers.{ctx.layer.name}") from None


def _downloads(ctx: BuildContext) -> list[Download]:
    """The layer's .debs as files of the image's fetch plan: one apt run for all the debs of
    an architecture and suite (apt pipelines them itself)."""
    from dream.debian.apt import Apt, Package
    debs = Apt(ctx.lock["architecture"], suite=ctx.lock.get("suite")).debs
    source = Source(("apt", ctx.lock["architecture"], ctx.lock.get("suite")),
                    lambda some: _fetch(ctx, some), lambda p: (debs / f"{p.sha256}.deb").exists(),
                    splits=False)
    packages = [Package(**p) for p in ctx.lock["packages"]]
    return [Download(p.sha256, p.size, p, source) for p in packages]


def _vanished_hint(exc: VanishedPins, image: str) -> str:
    names = " ".join(f"--upgrade-package {p.name}" for p in exc.packages[:4])
    return f"{exc.message}; run `doit lock:{image} {names}` (or `--upgrade` for everything)"
