"""Recipes → doit tasks. dodo.py re-exports the ``task_*`` creators from here.

Tasks (``doit list --all``):
  layer:<image>/<layer>  build one layer into the store (up to date when the store has its key)
  build:<image>          assemble config + manifest from the layers, tag it in the store
  lock:<image>           resolve outside inputs into recipes/<image>.lock.json
  load:<image>           the Docker engine pulls the image from the store, served on 127.0.0.1
  shell:<image>          a shell in the image on the current directory (dream/shell.py)
  push:<image>           push the built image to registries (image.push or --to)
  pull:<image>           fetch the blobs of the image that only a registry holds
  check:<image>          run the image's run steps again; name the files whose bytes differ
  inspect:<image>        the image's layers, biggest files and config (--svg FILE: a picture)
  render:<renderer>      write a deployment's files: procfile, compose, plugins (dream/tasks/services.py)
  render:images          an image per service of a deployment, in the store
  run:procfile           run a deployment under dream's supervisor
  run:compose            run it with docker-compose on the Docker engine (run:<plugin manager> too)
  load:/push:<deployment>-<service>  a per-service image into the engine / to registries
  verify, gc             check / clean the store

A layer task is up to date exactly when the store holds a blob for its input key, so deleting
doit's database costs a re-hash of the inputs, never a rebuild.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from doit.exceptions import TaskFailed

from dream.boundary import guard_creator
from dream.builders import BUILDERS, BuildContext, Part
from dream.errors import DreamError, UserErrors
from dream.lock import Upgrade, locked_inputs, read_lock, write_lock
from dream.oci.compress import CODECS, disagreements
from dream.oci.image import source_date_epoch, write_image
from dream.progress import bar
from dream.recipe.cache import load_cached
from dream import fetch_plan, verbs
from dream.recipe.model import LayerSpec, Recipe
from dream.registry.settings import configure
from dream.tasks.services import service_tasks
from dream.shell import shell_task
from dream.store import Descriptor, Store, open_store
from dream.store.layout import canonical_json, store_path

if TYPE_CHECKING:
    from dream.fetch_plan import Download
    from dream.registry.cache import LayerCache

RECIPE_DIR = "recipes"
_selected_layers: set[str] | None = None  # the layer tasks this run may execute (None: any)
RECIPE_CACHE = Path(".dream") / "recipe-cache"  # validated models (dream/recipe/cache.py)


def _fetch(store: Store, descriptor: Descriptor) -> None:
    """The stores' hook for a blob only a registry holds (`Store.local_blob`); the registry
    code is imported only when one is fetched, so `doit list` loads no HTTP stack."""
    from dream.registry.fetch import fetch_blob
    fetch_blob(store, descriptor)


def select_layers(names: set[str] | None) -> None:
    """Which layer tasks this run may execute (`dream.project` tells, from doit's selection)."""
    global _selected_layers
    _selected_layers = names


def load_recipes(root: Path) -> list[Recipe]:
    """Every recipe under ``root/recipes``; all their errors are printed at once, then exit 1.
    A recipe none of whose files changed comes from ``.dream/recipe-cache`` (no YAML, no cerberus)."""
    recipes, errors = [], []
    for path in sorted((root / RECIPE_DIR).glob("*.yaml")):
        try:
            recipes.append(load_cached(path, root, root / RECIPE_CACHE))
        except UserErrors as exc:
            errors.extend(exc.errors)
        except DreamError as exc:
            errors.append(exc)
    if errors:
        for line in dict.fromkeys(str(error) for error in errors):  # a shared module's mistake once
            print(line, file=sys.stderr)
        raise SystemExit(1)
    return recipes


def cache_for(recipe: Recipe) -> LayerCache | None:
    """``DREAM_LAYER_CACHE`` (a repository, or ``off``), else the recipe's ``image.cache``."""
    setting = os.environ.get("DREAM_LAYER_CACHE", "").strip() or recipe.image.get("cache")
    if not setting or setting == "off":
        return None
    from dream.registry.cache import LayerCache  # imports the HTTP stack: only when a cache is set
    where = "DREAM_LAYER_CACHE" if os.environ.get("DREAM_LAYER_CACHE", "").strip() else f"{recipe.display}: image.cache"
    try:
        return LayerCache(setting)
    except DreamError as exc:
        raise DreamError(f"{where}: {exc}") from None


class LayerJob:
    """One image layer (a part of a recipe layer): its input key (computed once, lazily) and
    how to build it."""

    def __init__(self, image: ImageJob, layer: LayerSpec, part: Part | None, problem: DreamError | None = None) -> None:
        self.image, self.layer, self.part, self.problem = image, layer, part, problem
        self.name = part.name if part else layer.name
        self.builder = BUILDERS[layer.kind]
        self.codec = CODECS[image.recipe.image["compression"]]

    @cached_property
    def key(self) -> str:
        if self.part is None:
            assert self.problem is not None
            raise self.problem
        material = {"kind": self.layer.kind, "builder": self.builder.version,
                    "codec": self.codec.fingerprint, "mtime": source_date_epoch(),
                    "inputs": self.part.inputs()}
        return hashlib.sha256(canonical_json(material)).hexdigest()

    def built(self, store: Store) -> Descriptor | None:
        return store.get_ref(self.key)

    def build(self) -> dict[str, Any]:
        """The layer task's action: reuse the store's blob for this key, take it from its
        registry (a base image's layer) or the layer cache, or build it (and publish it)."""
        if self.image.problem is not None:
            raise self.image.problem
        store = open_store(fetch=_fetch)
        with store.lock("store", shared=True), fetch_plan.stopped_by_ctrl_c():
            descriptor = self.built(store) or self.from_outside(store)
            if descriptor is None:
                self.image.prefetch(store)
                descriptor = self.build_here(store)
                if self.image.cache:
                    self.image.cache.publish(store, self.key, descriptor)
            store.put_ref(self.key, descriptor)
        return {"digest": descriptor.digest, "key": self.key}

    def from_outside(self, store: Store) -> Descriptor | None:
        """A base image's layer (recorded, not downloaded), or a layer in the remote cache."""
        label = f"{self.image.recipe.name}/{self.name}"
        if self.part is not None and self.part.remote is not None:
            descriptor, source = self.part.remote
            store.add_source(descriptor.digest, source)
            print(f"{label}: {descriptor.digest} (from {source})")
            return descriptor
        cache = self.image.cache
        found = cache.lookup(store, self.key, self.codec.media_type) if cache else None
        if cache and found is not None:
            print(f"{label}: {found.digest} (from the layer cache {cache.reference.name})")
        return found

    def build_here(self, store: Store) -> Descriptor:
        from dream.oci.layer import build_layer, tree_size  # the tar and gzip pipeline: only to build
        assert self.part is not None and self.part.tree is not None
        ctx = self.image.context(self.layer, store)
        if self.part.downloads is not None:
            self.image.downloads.wait(self.part.downloads())
        with ctx.scratch() as scratch:
            tree = self.part.tree(ctx, scratch)
            label = f"{self.image.recipe.name}/{self.name}"
            settled = disagreements()
            with bar(label, tree_size(tree)) as advance:
                descriptor = build_layer(tree, self.codec, source_date_epoch(), store, advance)
            settled = disagreements() - settled
        print(f"{label}: {descriptor.digest} ({descriptor.size:,} bytes)"
              + (f"; gzip: while it was built, {settled} member(s) compressed again until two results agreed"
                 if settled else ""))
        return descriptor

    def planned_downloads(self, store: Store) -> Callable[[], list[Download]] | None:
        """The files that building this layer fetches; None when it fetches none, or when the
        store or a base image holds the layer."""
        part = self.part
        if part is None or part.downloads is None or part.remote is not None or self.built(store) is not None:
            return None
        return part.downloads

    def uptodate(self, task: Any, values: Any) -> bool:
        """Up to date when the store has this key. The ref is re-stamped, under the store lock,
        as the build action would re-write it: `gc` spares what a running build wrote or
        re-wrote, and an up-to-date layer's blob, which no tag may reach yet, is one of those."""
        if self.image.problem is not None:
            return False  # the action says what stops the image
        store = open_store()
        with store.lock("store", shared=True):
            if self.built(store) is None:
                return False
            store.touch_ref(self.key)
        return True


class ImageJob:
    """One recipe: its layers' jobs and the image-level tasks."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self._locks: dict[str, Any] | None = None
        self.cache = cache_for(recipe)
        self.downloads = fetch_plan.FetchPlan()
        self.layers: list[LayerJob] = []
        for layer in recipe.layers:
            try:
                parts = BUILDERS[layer.kind].parts(self.context(layer, Store(store_path(), fetch=_fetch)))
                self.layers += [LayerJob(self, layer, part) for part in parts]
            except DreamError as exc:  # e.g. no lock yet: the task fails and says so
                self.layers.append(LayerJob(self, layer, None, exc))

    @cached_property
    def problem(self) -> DreamError | None:
        """What stops a layer of this image before anything is built (no lock, a layer missing
        from it or stale in it): every layer task fails with it, so a mistake in the last layer
        costs no build of the first ones."""
        for layer in self.recipe.layers:  # in order: the first layer's mistake is named
            found = next((job.problem for job in self.layers if job.layer is layer and job.problem), None)
            if found is not None:
                return found
            try:
                locked_inputs(self.recipe, layer.name, self.locks())
            except DreamError as exc:
                return exc
        return None

    def prefetch(self, store: Store) -> None:
        """Start, once, the downloads of every layer still to build; not with a layer cache,
        which may hold those layers (each layer then fetches its own files, if it builds)."""
        if self.cache is None:
            self.downloads.start(lambda: [files for job in self.layers if (files := self._planned(job, store))])

    def _planned(self, job: LayerJob, store: Store) -> Callable[[], list[Download]] | None:
        """A layer's downloads for the plan: none for a layer this run does not build, and none
        for one whose key cannot be computed (that layer's own task says why, not this one)."""
        if _selected_layers is not None and f"layer:{self.recipe.name}/{job.name}" not in _selected_layers:
            return None
        try:
            return job.planned_downloads(store)
        except (DreamError, OSError):
            return None

    def locks(self) -> dict[str, Any]:
        if self._locks is None:
            self._locks = read_lock(self.recipe)
        return self._locks

    def context(self, layer: LayerSpec, store: Store) -> BuildContext:
        return BuildContext(self.recipe, layer, lambda: locked_inputs(self.recipe, layer.name, self.locks()),
                            store, lambda: self.lower(layer), lambda: self.env_below(layer))

    def env_below(self, layer: LayerSpec) -> dict[str, str]:
        """The image's environment as the layers below ``layer`` and the recipe make it (the
        order of `config`: a base image's, the layers', the recipe's)."""
        env: dict[str, str] = {}
        for below in self.recipe.layers[:self.recipe.layers.index(layer)]:
            extra = BUILDERS[below.kind].config(self.context(below, Store(store_path(), fetch=_fetch)))
            env.update(extra.get("base", {}).get("env", {}))
            env.update(extra.get("env", {}))
        return {**env, **self.recipe.image.get("env", {})}

    def lower(self, layer: LayerSpec) -> list[tuple[str, Descriptor]]:
        """Kind and descriptor of every built image layer below ``layer``."""
        out = []
        store = Store(store_path())
        for job in self.layers:
            if job.layer is layer:
                break
            descriptor = job.built(store)
            if descriptor is None:
                raise DreamError(f"layer {job.name} is not built yet")
            out.append((job.layer.kind, descriptor))
        return out

    def config(self) -> dict[str, Any]:
        """The image config's fields, from three sources in rising order:

        1. a ``from`` base image's config (its Env, Entrypoint, Cmd, User, …);
        2. the recipe's ``image`` (a field set there, even to null, replaces the base's; and,
           as in a Dockerfile, an image that sets its own entrypoint does not inherit a cmd);
        3. what the other layers' builders add: env and labels under the recipe's, ports
           joined, and a services layer's supervisor ``cmd`` (and ``healthcheck``) over any other.
        """
        base: dict[str, Any] = {}
        env: dict[str, str] = {}
        labels: dict[str, str] = {}
        ports: set[str] = set(self.recipe.image.get("ports", []))
        cmd = healthcheck = None
        for layer in self.recipe.layers:
            extra = BUILDERS[layer.kind].config(self.context(layer, Store(store_path(), fetch=_fetch)))
            base.update(extra.get("base", {}))
            env.update(extra.get("env", {}))
            labels.update(extra.get("labels", {}))
            ports |= set(extra.get("ports", []))
            cmd = extra.get("cmd", cmd)
            healthcheck = extra.get("healthcheck", healthcheck)
        ports |= set(base.get("ports", []))
        if self.recipe.image.get("entrypoint") is not None:
            base.pop("cmd", None)
        image = {**base, **self.recipe.image}
        image["env"] = {**base.get("env", {}), **env, **self.recipe.image.get("env", {})}
        image["labels"] = {**base.get("labels", {}), **labels, **self.recipe.image.get("labels", {})}
        image["ports"] = sorted(ports)
        if cmd is not None:
            image["cmd"] = cmd
        if healthcheck is not None:
            image["healthcheck"] = healthcheck
        return image

    def assemble(self) -> dict[str, Any]:
        store = open_store()
        with store.lock("store", shared=True):
            layers = []
            for job in self.layers:
                descriptor = job.built(store)
                if descriptor is None:
                    raise DreamError(f"layer {job.name} is missing from the store "
                                     "(removed by a concurrent gc?); run the build again")
                layers.append((job.name, job.part.comment if job.part else "", descriptor))
            manifest = write_image(store, self.config(), layers)
            store.tag(self.recipe.name, manifest)
        print(f"{self.recipe.name}: {manifest.digest} "
              f"({sum(d.size for _, _, d in layers):,} bytes in {len(layers)} layers)")
        return {"digest": manifest.digest}

    def check(self) -> None | TaskFailed:
        """`doit check:<image>`: run each run layer's step again in a fresh sandbox and compare
        its files with the stored layer's (as `nix build --check` does)."""
        from dream.builders.run import RunBuilder
        steps = [job for job in self.layers if isinstance(job.builder, RunBuilder)]
        if not steps:
            print(f"{self.recipe.name}: no run layers to check")
            return None
        unreproducible = []
        store = open_store(fetch=_fetch)
        with store.lock("store", shared=True):
            for job in steps:
                assert isinstance(job.builder, RunBuilder)
                label, built = f"layer:{self.recipe.name}/{job.name}", job.built(store)
                if built is None:
                    raise DreamError(f"{label} is not built; run `doit build:{self.recipe.name}`")
                ctx = self.context(job.layer, store)
                with ctx.scratch() as scratch:
                    differ, compared = job.builder.differences(ctx, built, scratch)
                if differ:
                    unreproducible.append(label)
                    print(f"{label}: NOT reproducible: {len(differ)} of {compared} entries differ "
                          f"from the stored layer: {', '.join(differ[:10])}"
                          + (f" and {len(differ) - 10} more" if len(differ) > 10 else ""))
                else:
                    print(f"{label}: reproducible: the same {compared} entries, byte for byte")
        if unreproducible:
            return TaskFailed(f"{len(unreproducible)} of {len(steps)} run steps gave other bytes: "
                              + ", ".join(unreproducible))
        return None

    def lock(self, upgrade: bool, upgrade_package: list[str]) -> None:
        """Write the lock, moving only what changed (or what ``--upgrade…`` names)."""
        report = write_lock(self.recipe, Upgrade.of(upgrade, upgrade_package))
        for line in report:
            print(f"{self.recipe.lock_path.name}: {line}")
        return None

    def push(self, to: list[str]) -> None:
        """Push the built image to ``to`` (``--to``, repeatable) or the recipe's ``image.push``."""
        from dream.registry.push import push_image
        from dream.oci.reference import parse_reference
        targets = [parse_reference(t, "push target") for t in (to or self.recipe.image["push"])]
        if not targets:
            raise DreamError(f"nowhere to push {self.recipe.name}: set image.push in "
                             f"{self.recipe.display} or give --to host/repository")
        if any(t.digest for t in targets):
            raise DreamError("a push target is a repository, with a tag at most, not a digest")
        store = open_store(fetch=_fetch)
        with store.lock("store", shared=True):  # gc waits: no blob vanishes mid-push
            manifest = self.tagged(store)
            for target in targets:
                tags = [target.tag] if target.tag else self.recipe.image["tags"]
                print(push_image(store, manifest, target, tags))
        return None

    def tagged(self, store: Store) -> Descriptor:
        manifest = store.tagged(self.recipe.name)
        if manifest is None:
            raise DreamError(f"no image {self.recipe.name!r} in the store; run `doit build:{self.recipe.name}`")
        return manifest

    @staticmethod
    def fetch_missing(store: Store, manifest: Descriptor) -> list[Descriptor]:
        """Fetch every blob of the image that the store knows only by its source; return them.
        All are tried, so each failure is reported (and its vanished source forgotten)."""
        body = store.read_json(manifest.digest)
        missing = [Descriptor.from_json(d) for d in [body["config"], *body["layers"]]
                   if not store.has_blob(d["digest"], d["size"])]
        problems = []
        for descriptor in missing:
            try:
                store.local_blob(descriptor)
            except DreamError as exc:
                problems.append(str(exc))
        if problems:
            raise DreamError("\n".join(problems))
        return missing

    def pull(self) -> None:
        """Make the store hold the whole built image."""
        store = open_store(fetch=_fetch)
        with store.lock("store", shared=True):
            missing = self.fetch_missing(store, self.tagged(store))
        print(f"{self.recipe.name}: fetched {len(missing)} blobs "
              f"({sum(d.size for d in missing):,} bytes); the store holds the whole image")
        return None

    def load(self, into: str = verbs.DOCKER) -> None:
        store = open_store(fetch=_fetch)
        with store.lock("store", shared=True):
            manifest = self.tagged(store)
            self.fetch_missing(store, manifest)  # a base layer may still be remote
            loaded = verbs.loader(into)(store, manifest, self.recipe.name, self.recipe.image["tags"])
        print(loaded)  # loaded name:tag, … (k of n layers sent, bytes): the engine took only what it lacked
        return None


def dodo_tasks(root: Path | None = None) -> dict[str, Callable[[], Any]]:
    """The ``task_*`` functions for dodo.py, over every recipe under ``root/recipes``."""
    root = root or Path.cwd()
    recipes = load_recipes(root)
    for recipe in recipes:
        configure(recipe.registries)
    try:
        source_date_epoch()  # a bad SOURCE_DATE_EPOCH is one line before any task runs
        jobs = [ImageJob(recipe) for recipe in recipes if recipe.builds_image]
        services = service_tasks(recipes, root)
    except DreamError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None

    def task_layer() -> Any:
        """build one layer into the store"""
        for image in jobs:
            for job in image.layers:
                below = image.layers[:image.layers.index(job)]
                reads = job.builder.reads_lower
                yield {"name": f"{image.recipe.name}/{job.name}",
                       "doc": f"{job.layer.kind} layer of {image.recipe.name}",
                       "actions": [job.build], "uptodate": [job.uptodate], "verbosity": 2,
                       "clean": [verbs.clean_action(verbs.clean_layer, job)],
                       "task_dep": [f"layer:{image.recipe.name}/{b.name}" for b in below] if reads else []}

    def task_build() -> Any:
        """build an image into the store"""
        for image in jobs:
            name = image.recipe.name
            yield {"name": name, "doc": f"build image {name} into the store",
                   "actions": [image.assemble], "verbosity": 2,
                   "uptodate": [verbs.image_check(image)],
                   "clean": [verbs.clean_action(verbs.clean_image, image)],
                   "task_dep": [f"layer:{name}/{job.name}" for job in image.layers]}

    def task_lock() -> Any:
        """pin an image's outside inputs in recipes/<image>.lock.json"""
        for image in jobs:
            yield {"name": image.recipe.name, "doc": f"write {image.recipe.lock_path.name}",
                   "actions": [image.lock], "verbosity": 2,
                   "params": [{"name": "upgrade", "long": "upgrade", "type": bool, "default": False,
                               "help": "resolve every pin afresh"},
                              {"name": "upgrade_package", "long": "upgrade-package", "type": list,
                               "default": [], "help": "move this Debian package, Python "
                               "distribution or layer to its newest fitting version (repeatable)"}]}

    def task_load() -> Any:
        """load an image into the Docker engine or podman (it pulls only the layers it lacks)"""
        for image in jobs:
            name = image.recipe.name
            yield {"name": name, "doc": f"load {name} into the Docker engine (--into podman: podman's storage)",
                   "actions": [image.load], "task_dep": [f"build:{name}"], "verbosity": 2,
                   "params": [verbs.INTO_PARAM], "uptodate": [verbs.LoadedCheck(image)]}

    def task_push() -> Any:
        """push an image to registries (image.push, or --to host/repository)"""
        for image in jobs:
            name = image.recipe.name
            yield {"name": name, "doc": f"push {name} to {', '.join(image.recipe.image['push']) or '--to'}",
                   "actions": [image.push], "task_dep": [f"build:{name}"], "verbosity": 2,
                   "params": [{"name": "to", "long": "to", "type": list, "default": [],
                               "help": "push to this repository instead of image.push (repeatable)"}]}

    def task_pull() -> Any:
        """fetch the image's blobs that only a registry holds into the store"""
        for image in jobs:
            name = image.recipe.name
            yield {"name": name, "doc": f"fetch every blob of {name} into the store",
                   "actions": [image.pull], "task_dep": [f"build:{name}"], "verbosity": 2}

    def task_check() -> Any:
        """run an image's run steps again in fresh sandboxes; name the files whose bytes differ"""
        for image in jobs:
            name = image.recipe.name
            yield {"name": name, "doc": f"check that {name}'s run steps give the same bytes again",
                   "actions": [image.check], "task_dep": [f"build:{name}"], "verbosity": 2}

    def task_shell() -> Any:
        """a shell in an image on the current directory (--cmd CMD runs CMD)"""
        for image in jobs:
            yield shell_task(image)

    def task_inspect() -> Any:
        """show an image's layers, biggest files and config (--svg FILE: draw the layers)"""
        for image in jobs:
            name = image.recipe.name
            yield {"name": name, "doc": f"show {name}'s layers, biggest files and config (--svg FILE: draw the layers)",
                   "actions": [(_inspect, [image])], "verbosity": 2, "uptodate": [False],
                   "params": [{"name": "svg", "long": "svg", "type": str, "default": "",
                               "help": "also draw the layers into this SVG file"}]}

    creators = {"task_layer": task_layer, "task_shell": task_shell, "task_build": task_build, "task_lock": task_lock,
                "task_load": task_load, "task_push": task_push, "task_pull": task_pull, "task_check": task_check,
                "task_verify": task_verify, "task_inspect": task_inspect,
                "task_gc": task_gc, **services}
    return {name: guard_creator(creator, name.removeprefix("task_")) for name, creator in creators.items()}


def _inspect(image: ImageJob, svg: str) -> None | TaskFailed:
    """`doit inspect:<image>`; its module is imported only when it runs (every command lists it)."""
    from dream.tasks.inspect import run_inspect
    return run_inspect(image, _fetch, svg)


def task_verify() -> dict[str, Any]:
    """re-hash every blob in the store and check every ref and tagged image (--repair: remove what is corrupt)"""

    def run(repair: bool) -> None | TaskFailed:
        from dream.store.maintenance import verify, verify_layout
        if repair:  # a directory replaced by a file would stop open_store itself
            verify_layout(Store(store_path()))
        report = verify(open_store(), repair)
        for line in report.repaired:
            print(f"repaired: {line}")
        for problem in report.problems:
            print(problem, file=sys.stderr)
        print(f"verify: {report.checked} blobs re-hashed, {len(report.problems)} problems"
              + (f", {len(report.repaired)} repaired" if repair else ""))
        if report.problems:
            return TaskFailed(f"{len(report.problems)} problems in the store"
                              + ("" if repair else "; `doit verify --repair` removes what is corrupt"))
        return None

    return {"actions": [run], "verbosity": 2,
            "params": [{"name": "repair", "long": "repair", "type": bool, "default": False,
                        "help": "remove corrupt blobs and refs, set a damaged index.json aside"}]}


def task_gc() -> dict[str, Any]:
    """remove blobs that no tagged image uses and the layers unpacked for run steps (--cache: also every downloaded wheel and deb)"""

    def run(cache: bool) -> None | TaskFailed:
        from dream.store.maintenance import gc
        report = gc(open_store())
        if report.problems:
            return TaskFailed("gc refused, the store is inconsistent: " + "; ".join(report.problems))
        print(f"gc: removed {report.removed} blobs, freed {report.freed:,} bytes")
        if cache:
            from dream.debian.apt import cache_dir
            from dream.download_cache import clear_downloads
            reclaimed = clear_downloads(cache_dir())
            print(f"gc: removed {reclaimed.files} downloads from {cache_dir()}, freed {reclaimed.bytes:,} bytes")
        return None

    return {"actions": [run], "verbosity": 2,
            "params": [{"name": "cache", "long": "cache", "type": bool, "default": False,
                        "help": "also empty the download cache (wheels, debs); builds fetch again"}]}
