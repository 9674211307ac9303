"""The service tasks, each for one deployment (``-d NAME``):

  render:procfile, render:compose,  write build/<deployment>/<renderer>/ (and render:<plugin>)
  render:kubernetes
  render:images                     each service's image in the store, tagged <deployment>-<service>
  run:procfile                      the deployment here, under dream's supervisor
  run:compose                       the deployment under docker-compose (and run:<plugin>)
  run:kubernetes                    kubectl apply of the rendered set, waiting for its rollout
  run:podman-kube                   the rendered set under ``podman kube play``, here
  render:systemd, run:systemd       units for systemd; installed, started and followed (--down)
  lock:vm, render:vm, run:vm        a bootable VM of the deployment (dream/tasks/vm.py)
  load:<deployment>-<service>       a service's image into the Docker engine (--into podman)
  push:<deployment>-<service>       a service's image to registries

Wiring only: a task picks the deployment, then a renderer (dream/renderers/, through
dream/managers/host.py, which reads and writes the files) or a manager (dream/managers/) does
the work. Plugins (dream/managers/plugins.py) get the same tasks as the built-ins.

``-d NAME`` (``--deployment``) picks the deployment; without it, ``$DREAM_DEPLOYMENT``, else
the one deployment marked ``default: true``, else the project's only deployment. doit gives a
task's params to its actions and, through the Task its ``uptodate`` checks receive
(``task.options``), to those checks too; never to a task it runs as a dependency. So a task of
one deployment depends on nothing of another: ``render:compose``, ``render:images`` and
``run:compose`` need the deployment's recipe image, and their check names ``build:<recipe>`` of
the deployment the command line chose as a doit setup task (run first, only when the task runs).
(``run`` is a doit command, so ``run:procfile`` is a task whose basename holds the colon.)

``render:<renderer>`` is up to date when the files it would write are those on disk (computed
in memory: the plan, the env files, the renderer); ``render:images`` and the ``run:`` tasks
always run (an image that is already the one its inputs make is not written again).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from doit.exceptions import TaskFailed

from dream.errors import DreamError
from dream.managers.plugins import Plugin, managers, renderers
from dream.recipe.model import Deployment, Recipe
from dream.tasks.params import DEPLOYMENT_PARAM, Check
from dream.tasks.vm import VmTasks
from dream.verbs import INTO_PARAM, loader

if TYPE_CHECKING:
    from dream.oci.descriptor import Descriptor
    from dream.renderers.base import File, Renderer
    from dream.store.layout import Store

# dream.managers.host (the supervisor, the renderers) is imported by the actions only: every
# doit command imports this module, and a `doit build` renders and runs nothing. So the names of
# the built-ins are written here (a unit test holds them to RENDERERS).
BUILT_IN_RENDERERS = ["procfile", "compose", "kubernetes", "systemd"]
IMAGES = "images"  # render:images: not a renderer, but no plugin may take its task's name
BUILT_IN_MANAGERS = ["procfile", "compose", "kubernetes", "podman-kube", "systemd"]
CONTAINER_RENDERERS = ("compose", "kubernetes")  # their files name the per-service images
PODMAN_KUBE = "podman-kube"  # run:podman-kube renders kubernetes with local images, here

VOLUMES_PARAM = {"name": "volumes", "long": "volumes", "type": bool, "default": False,
                 "help": "on the way down also remove the deployment's named volumes (its data)"}
DOWN_PARAM = {"name": "down", "long": "down", "type": bool, "default": False,
              "help": "delete what an earlier run applied (its PersistentVolumeClaims only with --volumes)"}


def all_deployments(recipes: list[Recipe]) -> dict[str, Deployment]:
    """Every deployment of the project by name; a name used by two recipes is an error."""
    found: dict[str, Deployment] = {}
    for recipe in recipes:
        for name, deployment in recipe.deployments.items():
            if name in found:
                raise DreamError(f"deployment {name!r} is defined by {found[name].recipe} and "
                                 f"{recipe.display}; rename one", deployment.location)
            found[name] = deployment
    return found


def pick(deployments: dict[str, Deployment], requested: str) -> Deployment:
    name = requested or os.environ.get("DREAM_DEPLOYMENT", "")
    names = ", ".join(sorted(deployments)) or "none"
    if name:
        if name not in deployments:
            raise DreamError(f"no deployment {name!r} (the project has {names})")
        return deployments[name]
    marked = [d for d in deployments.values() if d.default]
    if len(marked) > 1:
        raise DreamError("more than one deployment is marked default: "
                         + ", ".join(d.name for d in marked))
    if marked:
        return marked[0]
    if len(deployments) == 1:
        return next(iter(deployments.values()))
    raise DreamError(f"which deployment? the project has {names}; name one with -d NAME "
                     "or mark one `default: true`")


def run_procfile(deployment: Deployment, root: Path) -> int:
    """The deployment under dream's supervisor here, until it ends; its exit code."""
    from dream.managers import host
    return host.run(deployment, root)


def _fetch(store: Store, descriptor: Descriptor) -> None:
    """The store's hook for a blob only a registry holds (as dream/tasks/__init__.py's)."""
    from dream.registry.fetch import fetch_blob
    fetch_blob(store, descriptor)




def tag_clashes(deployments: dict[str, Deployment], images: set[str]) -> dict[tuple[str, str], str]:
    """(deployment, service) → the line that refuses its image: its store tag
    ``<deployment>-<service>`` is a recipe's image (building it would move that tag) or the
    tag of another deployment's service (``a``/``b-c`` and ``a-b``/``c``)."""
    from dream.services.per_service import image_tag
    owners: dict[str, list[tuple[str, str]]] = {}
    for deployment in deployments.values():
        for service in deployment.services:
            owners.setdefault(image_tag(deployment.name, service), []).append((deployment.name, service))
    clashes = {}
    for tag, pairs in owners.items():
        if tag in images or len(pairs) > 1:
            others = [f"image {tag}"] if tag in images else []
            others += [f"service {s} of deployment {d}" for d, s in pairs]
            for pair in pairs:
                clashes[pair] = (f"the image tag {tag} would name {' and '.join(others)}; "
                                 "rename the deployment or the service")
    return clashes


class Services:
    """The service tasks of a project (see the module docstring)."""

    def __init__(self, recipes: list[Recipe], root: Path) -> None:
        self.root = root
        self.deployments = all_deployments(recipes)
        self.images = {recipe.name for recipe in recipes if recipe.builds_image}
        self.renderers = renderers([*BUILT_IN_RENDERERS, IMAGES], recipes)
        self.managers = managers(BUILT_IN_MANAGERS, recipes)
        self.push_targets = {recipe.name: list(recipe.image.get("push", [])) for recipe in recipes}
        self.clashes = tag_clashes(self.deployments, self.images)
        self.vm = VmTasks(recipes, root, lambda name: pick(self.deployments, name), self.build_first, self.chosen)

    def service_images(self, deployment: Deployment) -> tuple[Store, dict[str, Descriptor]]:
        """Each service's image written and tagged in the store (dream/managers/images.py):
        not for a recipe without layers, nor under a tag that is another image's."""
        from dream.managers.images import build_service_images
        from dream.store import open_store
        if deployment.recipe not in self.images:
            raise DreamError(f"deployment {deployment.name}: its recipe {deployment.recipe} has no layers, so "
                             "there is no image to run its services in (add a Debian layer with python3)")
        for service in deployment.services:
            if (deployment.name, service) in self.clashes:
                raise DreamError(self.clashes[deployment.name, service])
        store = open_store(fetch=_fetch)
        return store, build_service_images(store, deployment)

    # -- what the tasks share ----------------------------------------------------------------

    def chosen(self, task: Any) -> Deployment:
        """The deployment of the Task an ``uptodate`` check receives (its ``-d``)."""
        if task.options is None:  # a task doit did not parse a command line for
            task.init_options()
        return pick(self.deployments, task.options.get("deployment", ""))

    def build_first(self, task: Any, deployment: Deployment) -> None:
        """Make ``build:<recipe>`` of ``deployment`` a setup task of ``task``: doit runs it
        before the task's action, and only when the task is not up to date."""
        task.setup_tasks = [f"build:{deployment.recipe}"] if deployment.recipe in self.images else []

    @staticmethod
    def refuse_conflict(table: dict[str, Plugin], name: str) -> None:
        """A built-in task whose name a plugin declares too fails with that line."""
        if table[name].conflict:
            raise DreamError(table[name].conflict)

    def renderer(self, name: str) -> Renderer:
        """A built-in renderer from RENDERERS, else the plugin declared under ``name``."""
        plugin = self.renderers.get(name)
        if plugin is None or name == IMAGES:
            raise DreamError(f"no renderer {name!r} (the project has {', '.join(sorted(self.renderers))})")
        if plugin.value == "" and not plugin.conflict:
            from dream.renderers import RENDERERS
            return RENDERERS[name]
        renderer: Renderer = plugin.load()
        return renderer

    def files(self, deployment: Deployment, name: str, pushed: bool = True,
              out_name: str = "", options: dict[str, Any] | None = None) -> tuple[Path, list[File]]:
        """Where the renderer ``name`` writes ``deployment``, and what (computed, not written);
        with ``pushed``, images the store records as pushed are named by digest. ``out_name``
        and ``options``: another folder and other settings (a manager rendering for itself)."""
        from dream.managers import host
        from dream.store import Store
        from dream.store.layout import store_path
        where = store_path()
        store = Store(where) if pushed and (where / "index.json").is_file() else None  # else local tags
        plugin = self.renderers[name]
        if plugin.value:  # a plugin's render: its failure is one line naming it
            found: tuple[Path, list[File]] = plugin.call(host.rendered, deployment, self.root, self.renderer(name), name, store)
            return found
        return host.rendered(deployment, self.root, self.renderer(name), out_name or name, store, options)

    def write(self, deployment: Deployment, name: str, pushed: bool = True,
              out_name: str = "", options: dict[str, Any] | None = None) -> Path:
        """Render and write; say what was written, as a path from the project."""
        from dream.managers import host
        out, files = self.files(deployment, name, pushed, out_name, options)
        host.write_files(out, files)
        where = os.path.relpath(out, self.root)
        if name == "procfile":
            print(f"{deployment.name}: wrote {where}/Procfile and .env")
        else:
            print(f"{deployment.name}: wrote {where}/: {', '.join(file.path for file in files)}")
        return out

    # -- render: ---------------------------------------------------------------------------

    def render_task(self, plugin: Plugin) -> dict[str, Any]:
        name = plugin.name
        needs_image = name in CONTAINER_RENDERERS

        def render(deployment: str) -> None:
            chosen = pick(self.deployments, deployment)
            if needs_image:
                report_images(chosen, self.service_images(chosen)[1])
            self.write(chosen, name)
            return None

        def rendered(task: Any) -> bool:
            chosen = self.chosen(task)
            if needs_image:
                self.build_first(task, chosen)
            from dream.managers import host
            return host.written(*self.files(chosen, name))

        where = "dream" if plugin.value == "" else plugin.source
        doc = (f"write build/<deployment>/{name}/ (-d NAME), renderer {name} ({where})"
               + ("; builds the services' images first (render:images)" if needs_image else ""))
        return {"basename": f"render:{name}", "doc": doc, "actions": [render],
                "params": [DEPLOYMENT_PARAM], "verbosity": 2,
                "uptodate": [Check(f"build/<deployment>/{name}/ holds what rendering writes now", rendered)]}

    def images_task(self) -> dict[str, Any]:
        def build(deployment: str) -> None:
            self.refuse_conflict(self.renderers, IMAGES)
            chosen = pick(self.deployments, deployment)
            report_images(chosen, self.service_images(chosen)[1])

        def always(task: Any) -> bool:
            self.build_first(task, self.chosen(task))
            return False

        return {"basename": f"render:{IMAGES}", "actions": [build], "params": [DEPLOYMENT_PARAM],
                "verbosity": 2, "uptodate": [Check("never: an image unchanged is not written again", always)],
                "doc": "build each service's image of a deployment (-d NAME) into the store, tagged "
                       "<deployment>-<service> (the recipe's layers plus one small layer)"}

    # -- run: ------------------------------------------------------------------------------

    def procfile_task(self) -> dict[str, Any]:
        def run(deployment: str) -> None | TaskFailed:
            self.refuse_conflict(self.managers, "procfile")
            chosen = pick(self.deployments, deployment)
            sys.stdout.flush()
            code = run_procfile(chosen, self.root)
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: supervisor exit code {code}")

        return {"basename": "run:procfile", "actions": [run], "params": [DEPLOYMENT_PARAM],
                "verbosity": 2, "uptodate": [False],
                "doc": "run a deployment (-d NAME) under dream's supervisor until Ctrl-C"}

    def compose_task(self) -> dict[str, Any]:
        def run(deployment: str, volumes: bool) -> None | TaskFailed:
            from dream.managers.base import Manager
            from dream.managers.compose import ComposeManager
            from dream.services.plan import build_plan
            self.refuse_conflict(self.managers, "compose")
            chosen = pick(self.deployments, deployment)
            ComposeManager().executable()  # no docker-compose: one line before any image is built
            store, images = self.service_images(chosen)
            report_images(chosen, images)
            out = self.write(chosen, "compose", pushed=False)  # it runs what it loads: the local tags
            manager: Manager = ComposeManager(store, images, remove_volumes=volumes)
            code = manager.up(build_plan(chosen), out, self.root)
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: docker-compose exit code {code}")

        def never(task: Any) -> bool:
            import shutil
            from dream.managers.compose import COMPOSE
            if shutil.which(COMPOSE):  # else the action says so at once, building nothing
                self.build_first(task, self.chosen(task))
            return False

        return {"basename": "run:compose", "actions": [run], "params": [DEPLOYMENT_PARAM, VOLUMES_PARAM],
                "verbosity": 2, "uptodate": [Check("never: it runs the deployment", never)],
                "doc": "run a deployment (-d NAME) under docker-compose until Ctrl-C, then take it "
                       "down (volumes kept unless --volumes); builds and loads its images first"}

    def kubernetes_task(self) -> dict[str, Any]:
        def run(deployment: str, volumes: bool, down: bool) -> None | TaskFailed:
            from dream.managers.base import Manager
            from dream.managers.kubectl import KubectlManager
            from dream.services.plan import build_plan
            self.refuse_conflict(self.managers, "kubernetes")
            chosen = pick(self.deployments, deployment)
            kubectl = KubectlManager(remove_volumes=volumes)
            kubectl.executable()  # no kubectl: one line before any image is built
            manager: Manager = kubectl
            plan = build_plan(chosen)
            if down:  # what was applied, by its labels: nothing is built or rendered for that
                from dream.managers.host import RENDER_DIR
                code = manager.down(plan, self.root / RENDER_DIR / chosen.name / "kubernetes", self.root)
            else:
                report_images(chosen, self.service_images(chosen)[1])
                out = self.write(chosen, "kubernetes")  # the images by digest, where they were pushed
                code = manager.up(plan, out, self.root)
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: kubectl exit code {code}")

        def never(task: Any) -> bool:
            chosen = self.chosen(task)  # (which parses the options)
            if not task.options.get("down"):
                self.build_first(task, chosen)
            return False

        return {"basename": "run:kubernetes", "actions": [run],
                "params": [DEPLOYMENT_PARAM, VOLUMES_PARAM, DOWN_PARAM], "verbosity": 2,
                "uptodate": [Check("never: it applies the deployment", never)],
                "doc": "apply a deployment (-d NAME) to the current kubectl context and wait for its "
                       "rollout (--down: delete it); its images must be pushed (push:<deployment>-<service>)"}

    def podman_kube_task(self) -> dict[str, Any]:
        def run(deployment: str, volumes: bool) -> None | TaskFailed:
            from dream.managers.base import Manager
            from dream.managers.podman import PodmanKubeManager
            from dream.services.plan import build_plan
            self.refuse_conflict(self.managers, PODMAN_KUBE)
            chosen = pick(self.deployments, deployment)
            PodmanKubeManager().executable()  # no podman: one line before any image is built
            store, images = self.service_images(chosen)
            report_images(chosen, images)
            options = {**chosen.options.get("kubernetes", {}), "images": "local"}  # what it loads
            out = self.write(chosen, "kubernetes", pushed=False, out_name=PODMAN_KUBE, options=options)
            manager: Manager = PodmanKubeManager(store, images, remove_volumes=volumes)
            code = manager.up(build_plan(chosen), out, self.root)
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: podman exit code {code}")

        def never(task: Any) -> bool:
            self.build_first(task, self.chosen(task))
            return False

        return {"basename": f"run:{PODMAN_KUBE}", "actions": [run], "params": [DEPLOYMENT_PARAM, VOLUMES_PARAM],
                "verbosity": 2, "uptodate": [Check("never: it runs the deployment", never)],
                "doc": "run a deployment (-d NAME) here under `podman kube play` of its Kubernetes "
                       "manifests until Ctrl-C, then `podman kube down` (volumes kept unless --volumes)"}

    def systemd_task(self) -> dict[str, Any]:
        def run(deployment: str, down: bool) -> None | TaskFailed:
            from dream.managers.base import Manager
            from dream.managers.systemd import SystemdManager
            from dream.services.plan import build_plan
            self.refuse_conflict(self.managers, "systemd")
            chosen = pick(self.deployments, deployment)
            out = self.write(chosen, "systemd")
            manager: Manager = SystemdManager(scope=chosen.options.get("systemd", {}).get("scope"))
            plan = build_plan(chosen)
            sys.stdout.flush()
            code = manager.down(plan, out, self.root) if down else manager.up(plan, out, self.root)
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: systemd exit code {code}")

        return {"basename": "run:systemd", "actions": [run],
                "params": [DEPLOYMENT_PARAM, {**DOWN_PARAM, "help": "stop and uninstall the units an "
                                                                     "earlier run left"}],
                "verbosity": 2, "uptodate": [False],
                "doc": "install a deployment's (-d NAME) systemd units, start its target and follow the "
                       "journal until Ctrl-C, then stop and uninstall them (--down: only that)"}

    def plugin_task(self, plugin: Plugin) -> dict[str, Any]:
        def run(deployment: str) -> None | TaskFailed:
            from dream.services.plan import build_plan
            chosen = pick(self.deployments, deployment)
            manager = plugin.load()
            renders = getattr(manager, "renders", None)
            out = self.write(chosen, renders) if renders else None
            sys.stdout.flush()
            plan = build_plan(chosen)
            try:
                code = plugin.call(manager.up, plan, out, self.root)
            except KeyboardInterrupt:  # Ctrl-C takes down what up started, when the manager can
                code = plugin.call(manager.down, plan, out, self.root) if callable(getattr(manager, "down", None)) else 130
            return None if code == 0 else TaskFailed(f"deployment {chosen.name}: manager {plugin.name} exit code {code}")

        return {"basename": f"run:{plugin.name}", "actions": [run], "params": [DEPLOYMENT_PARAM],
                "verbosity": 2, "uptodate": [False],
                "doc": f"run a deployment (-d NAME) with manager {plugin.name} ({plugin.source})"}

    # -- one service's image ---------------------------------------------------------------

    def image_tasks(self, verb: str) -> list[dict[str, Any]]:
        """``load:`` or ``push:<deployment>-<service>`` for every service of every deployment
        whose recipe is an image (a tag a recipe's image, or an earlier service, already has is
        left to it)."""
        from dream.services.per_service import image_tag
        tasks, seen = [], set(self.images)
        for deployment in self.deployments.values():
            if deployment.recipe not in self.images:
                continue
            for service in deployment.services:
                tag = image_tag(deployment.name, service)
                if tag in seen:  # two deployments' services, or a recipe, with one tag: the first keeps it
                    continue
                seen.add(tag)
                act = self._load if verb == "load" else self._push
                task: dict[str, Any] = {
                    "basename": f"{verb}:{tag}", "actions": [(act, [deployment, service])],
                    "task_dep": [f"build:{deployment.recipe}"], "verbosity": 2,
                    "doc": f"{verb} service {service}'s image of deployment {deployment.name} "
                           + ("into the Docker engine (--into podman)" if verb == "load"
                              else "to registries (--to, or image.push)")}
                if verb == "load":
                    task["params"] = [INTO_PARAM]
                if verb == "push":
                    task["params"] = [{"name": "to", "long": "to", "type": list, "default": [],
                                       "help": "push to this repository instead of image.push (repeatable)"}]
                tasks.append(task)
        return tasks

    def _load(self, deployment: Deployment, service: str, into: str) -> None:
        from dream.managers.compose import ComposeManager
        store, images = self.service_images(deployment)
        ComposeManager(store, {service: images[service]}, load=loader(into)).load_images(deployment.name)

    def _push(self, deployment: Deployment, service: str, to: list[str]) -> None:
        from dream.oci.reference import parse_reference
        from dream.registry.push import push_image
        from dream.services.per_service import image_tag
        # A tag is honoured from --to only: image.push's tag is the recipe image's, not a service's.
        targets = [parse_reference(t, "push target") for t in to] or [
            replace(parse_reference(t, "push target"), tag="") for t in self.push_targets[deployment.recipe]]
        if not targets:
            raise DreamError(f"nowhere to push {image_tag(deployment.name, service)}: set image.push in "
                             f"the recipe of {deployment.name} or give --to host/repository")
        if any(t.digest for t in targets):
            raise DreamError("a push target is a repository, with a tag at most, not a digest")
        store, images = self.service_images(deployment)
        with store.lock("store", shared=True):
            for target in targets:
                print(push_image(store, images[service], target,
                                 [target.tag or image_tag(deployment.name, service)]))

    # -- the creators ----------------------------------------------------------------------

    def creators(self) -> dict[str, Callable[[], Any]]:
        def task_services() -> Any:
            """render, run, load and push a deployment's services (-d NAME)"""
            for plugin in self.renderers.values():
                yield self.images_task() if plugin.name == IMAGES else self.render_task(plugin)
            yield self.procfile_task()
            yield self.compose_task()
            yield self.kubernetes_task()
            yield self.podman_kube_task()
            yield self.systemd_task()
            yield from self.vm.tasks()
            for plugin in self.managers.values():
                if plugin.name not in BUILT_IN_MANAGERS:
                    yield self.plugin_task(plugin)
            yield from self.image_tasks("load")
            yield from self.image_tasks("push")

        return {"task_services": task_services}


def report_images(deployment: Deployment, images: dict[str, Descriptor]) -> None:
    """One line per service image: its tag and manifest digest."""
    from dream.services.per_service import image_tag
    for service, manifest in images.items():
        print(f"{image_tag(deployment.name, service)}: {manifest.digest}")


def service_tasks(recipes: list[Recipe], root: Path) -> dict[str, Any]:
    return Services(recipes, root).creators()
