"""What doit's everyday verbs mean for dream's tasks: up to date, clean, forget, info.

dream's state is the store, not doit's database: a layer task is up to date when the store has a
ref for its input key, so deleting ``.dream/doit.json`` or ``doit forget`` costs a re-check of the
inputs, never a rebuild. Hence:

- ``build:<image>`` is up to date when the image tagged in the store is exactly the one its
  layers and config make now (the manifest is computed in memory and compared by digest), so
  ``doit info build:X`` says "up-to-date" only when a build would change nothing;
- ``load:<image>`` is up to date when the engine has every tag pointing at the image whose id is
  the store's config digest (no 900 MB re-stream before each ``doit shell``);
- ``doit clean layer:X/L`` drops that layer's ref, ``doit clean build:X`` the image's tag and the
  refs of all its layers, so the next build makes them again (the bytes come out the same: that
  is the point of input keys). Blobs stay until ``doit gc``, which reclaims what no tag uses.
"""

from __future__ import annotations

import hashlib
import subprocess
from typing import TYPE_CHECKING, Any, Callable

from dream.boundary import failure_line
from dream.errors import DreamError
from dream.oci.image import image_blobs
from dream.store import Descriptor, Store, open_store
from dream.store.layout import store_path

if TYPE_CHECKING:
    from dream.tasks import ImageJob, LayerJob


class Check:
    """An ``uptodate`` callable that `doit info` names in words (not ``<function <lambda>>``)."""

    def __init__(self, what: str, test: Callable[[], bool]) -> None:
        self.what, self.test = what, test

    def __call__(self) -> bool:
        return self.test()

    def __repr__(self) -> str:
        return self.what


def image_check(image: ImageJob) -> Check:
    return Check(f"the store's {image.recipe.name} is the image its layers and config make now",
                 lambda: image_uptodate(image))


DOCKER, PODMAN = "docker", "podman"
INTO_PARAM = {"name": "into", "long": "into", "default": DOCKER,
              "choices": ((DOCKER, "the Docker engine"), (PODMAN, "podman's image storage")),
              "help": "where to load the image: docker (default) or podman"}


def loader(into: str) -> Callable[[Store, Descriptor, str, list[str]], Any]:
    """The function that loads an image from the store into ``into`` (docker or podman); both
    pull it from the store served on 127.0.0.1, so each takes only the layers it lacks."""
    if into == PODMAN:
        from dream.managers.podman import load_into_podman
        return load_into_podman
    from dream.engine import load
    return load


class LoadedCheck:
    """``load:<image>`` is up to date when the engine ``--into`` names holds every tag as this
    store's image (an uptodate check given the Task, so it reads ``--into``)."""

    def __init__(self, image: ImageJob) -> None:
        self.image = image

    def __call__(self, task: Any) -> bool:
        if task.options is None:  # a task doit did not parse a command line for
            task.init_options()
        return loaded_uptodate(self.image, task.options.get("into", DOCKER))

    def __repr__(self) -> str:
        return f"the engine's {self.image.recipe.name} tags are the store's image"


def built_layers(image: ImageJob, store: Store) -> list[tuple[str, str, Descriptor]] | None:
    """(name, comment, descriptor) of every layer of ``image``, or None if one is not built."""
    layers = []
    for job in image.layers:
        descriptor = job.built(store)
        if descriptor is None:
            return None
        layers.append((job.name, job.part.comment if job.part else "", descriptor))
    return layers


def image_uptodate(image: ImageJob) -> bool:
    """True when the store's tag is the manifest a build would write now; never raises."""
    try:
        store = Store(store_path())
        tagged = store.tagged(image.recipe.name)
        layers = built_layers(image, store) if tagged else None
        if tagged is None or layers is None or not store.has_blob(tagged.digest, tagged.size):
            return False
        _, manifest = image_blobs(image.config(), layers)
        return "sha256:" + hashlib.sha256(manifest).hexdigest() == tagged.digest
    except (DreamError, OSError, ValueError, KeyError):
        return False


def loaded_uptodate(image: ImageJob, into: str = DOCKER) -> bool:
    """True when the engine's ``name:tag`` for every tag is this store's image; never raises.
    (docker's image ID is the config's digest; podman's is its hex, its local names ``localhost/``.)"""
    try:
        store = Store(store_path())
        tagged = store.tagged(image.recipe.name)
        if tagged is None:
            return False
        config = store.read_json(tagged.digest)["config"]["digest"]
        prefix, config = ("localhost/", config.split(":")[1]) if into == PODMAN else ("", config)
        refs = [f"{prefix}{image.recipe.name}:{tag}" for tag in image.recipe.image["tags"]]
        run = subprocess.run([into, "image", "inspect", "--format", "{{.Id}}", *refs],
                             capture_output=True, text=True, timeout=30)
        return run.returncode == 0 and run.stdout.split() == [config] * len(refs)
    except (DreamError, OSError, ValueError, KeyError, subprocess.SubprocessError):
        return False


def clean_layer(job: LayerJob) -> None:
    """`doit clean layer:X/L`: drop the ref of the layer's input key (its blob stays)."""
    try:
        key = job.key
    except DreamError:
        return  # no key (e.g. no lock yet): nothing was built for it
    store = open_store()
    with store.lock("store", shared=True):
        dropped = store.drop_ref(key)
    if dropped:
        print(f"layer:{job.image.recipe.name}/{job.name}: dropped its ref; the next build makes "
              "it again (blobs stay until `doit gc`)")


def clean_image(image: ImageJob) -> None:
    """`doit clean build:X`: untag the image and drop its layers' refs, so a build redoes all."""
    name = image.recipe.name
    store = open_store()
    with store.lock("store", shared=True):
        untagged = store.untag(name)
        dropped = 0
        for job in image.layers:
            try:
                dropped += store.drop_ref(job.key)
            except DreamError:
                continue
    print(f"build:{name}: {'untagged the image' if untagged else 'no image tagged'} and dropped "
          f"{dropped} layer refs; the next build makes them again (blobs stay until `doit gc`)")


def clean_action(function: Any, *args: Any) -> Any:
    """A clean action that reports a failure (a bad store, a full disk) as one line and exits
    non-zero, instead of the traceback doit prints for an exception in a clean action."""
    def run() -> None:
        try:
            function(*args)
        except Exception as exc:  # noqa: BLE001 (the clean action's exception boundary)
            print(f"dream: {failure_line(exc, 'clean')}")
            raise SystemExit(1) from None
    run.__name__ = run.__qualname__ = getattr(function, "__name__", "clean")  # doit prints it
    return run
