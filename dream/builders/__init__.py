"""Layer builders, one module per layer kind; `BUILDERS` maps a kind to its builder."""

from dream.builders.base import BuildContext, Builder, Part
from dream.builders.cuda import CudaBuilder
from dream.builders.debian import DebianBuilder
from dream.builders.files import FilesBuilder
from dream.builders.from_image import FromBuilder
from dream.builders.home import HomeBuilder
from dream.builders.python import PythonBuilder
from dream.builders.run import RunBuilder
from dream.builders.services import ServicesBuilder

BUILDERS: dict[str, Builder] = {"files": FilesBuilder(), "debian": DebianBuilder(), "cuda": CudaBuilder(),
                                "python": PythonBuilder(), "home": HomeBuilder(),
                                "services": ServicesBuilder(), "from": FromBuilder(),
                                "run": RunBuilder()}

__all__ = ["BUILDERS", "BuildContext", "Builder", "Part"]
