"""Which of a release's wheels the image's interpreter would install.

uv's ``pylock.toml`` lists every wheel of a release that could match the target (charset-normalizer
has a cp311 build, an abi3 build and a pure ``py3-none-any`` one). pip and installer take the wheel
whose most specific tag ranks first in the interpreter's supported-tag list; dream does the same,
with `packaging`'s own ordering, for the *image's* interpreter (never the host's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from dream.errors import DreamError
from dream.python.target import PythonTarget

T = TypeVar("T")


def supported_tags(target: PythonTarget) -> list[Tag]:
    """The image interpreter's tags, best first: CPython's own ABI, then abi3 (this version and
    older ones), then ``none``, each over the platforms newest glibc first, then pure wheels."""
    version = tuple(int(part) for part in target.version.split(".")[:2])
    platforms = target.platforms()
    return [*cpython_tags(version, abis=[target.abi], platforms=platforms),
            *compatible_tags(version, interpreter=target.abi, platforms=platforms)]


def rank(filename: str, order: Mapping[Tag, int]) -> int | None:
    """The position of the wheel's best tag in ``order`` (tag → position in `supported_tags`;
    lower is better); None if none of its tags fits."""
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return None
    found = [order[tag] for tag in tags if tag in order]
    return min(found) if found else None


def best_wheel(name: str, candidates: Iterable[tuple[str, T]], target: PythonTarget) -> T:
    """The candidate (filename, item) the image's interpreter would install.

    A wheel none of whose tags fit is never chosen; when none fits, one line says which
    distribution and for which interpreter and platform.
    """
    order = {tag: index for index, tag in enumerate(supported_tags(target))}
    ranked = [(position, filename, item) for filename, item in candidates
              if (position := rank(filename, order)) is not None]
    if not ranked:
        raise DreamError(f"no wheel of {name} fits Python {target.version} on {target.platform}")
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return ranked[0][2]
