"""Which recipe line asked for a requirement that cannot be resolved.

uv reports an unknown distribution or an unmatched version in words; the requirement it names
is matched (by normalized name) with the layer's list, and the error points at that item's line
(`LayerSpec.at`, the line of each value the loader saw), so the user fixes the typo where they
wrote it. Failures no single item explains keep uv's summary, at the layer's line.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from dream.errors import DreamError
from dream.python.resolve import ResolveError, normalize
from dream.recipe.model import LayerSpec


@dataclass(frozen=True)
class RequirementSites:
    """A layer's requirement list (``spec[field]``), to blame a resolver failure on one item."""

    layer: LayerSpec
    field: str = "requirements"

    def blame(self, error: ResolveError) -> DreamError:
        """The error as one line at the requirement it is about, or at the layer."""
        requirements = list(self.layer.spec[self.field])
        if error.unknown and (index := _index(requirements, error.unknown)) is not None:
            written = _name(requirements[index]) or error.unknown
            return self._at(index, f"no distribution {written!r} on the package index "
                                   "(looked in pip's configured indexes and find-links)")
        if error.no_version and (index := _index(requirements, error.no_version)) is not None:
            return self._at(index, f"no release on the package index matches {requirements[index]!r}")
        return DreamError(error.message, self.layer.location, f"layers.{self.layer.name}")

    def _at(self, index: int, message: str) -> DreamError:
        location, path = self.layer.at(f"{self.field}[{index}]")
        return DreamError(message, location, path)


def _index(requirements: list[str], named: str) -> int | None:
    """The position of the requirement for the distribution ``named`` names, if any."""
    wanted = _name(named)
    for index, written in enumerate(requirements):
        name = _name(written)
        if wanted and name and normalize(name) == normalize(wanted):
            return index
    return None


def _name(requirement: str) -> str:
    try:
        return Requirement(requirement).name
    except InvalidRequirement:
        return ""
