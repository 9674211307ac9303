"""Layer builders, one module per layer kind; `BUILDERS` maps a kind to its builder."""

from dream.builders.base import BuildContext, Builder
from dream.builders.debian import DebianBuilder
from dream.builders.files import FilesBuilder

BUILDERS: dict[str, Builder] = {"files": FilesBuilder(), "debian": DebianBuilder()}

__all__ = ["BUILDERS", "BuildContext", "Builder"]
