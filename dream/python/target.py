"""The interpreter inside the image that wheels are resolved for and installed into."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dream.recipe.model import Recipe

UV_NEWEST_GLIBC = 40  # the newest manylinux_2_x that `uv pip compile --python-platform` accepts


@dataclass(frozen=True)
class PythonTarget:
    """Version, wheel platform and install prefix: everything that decides which wheel fits
    and where its files land. Never the host's interpreter: the image's may differ."""

    version: str
    platform: str
    prefix: str

    @classmethod
    def of(cls, recipe: Recipe) -> PythonTarget:
        settings = recipe.python
        return cls(settings["version"], settings["platform"], settings["prefix"])

    @property
    def site(self) -> str:
        """Debian's interpreter puts ``<prefix>/lib/pythonX.Y/dist-packages`` on ``sys.path``."""
        return f"{self.prefix}/lib/python{self.version}/dist-packages"

    @property
    def interpreter(self) -> str:
        """The shebang of console scripts: Debian's ``/usr/bin/pythonX.Y``."""
        return f"/usr/bin/python{self.version}"

    @property
    def abi(self) -> str:
        return "cp" + self.version.replace(".", "")

    def scheme(self) -> dict[str, str]:
        """installer's scheme: image paths for each part of a wheel."""
        return {"purelib": self.site, "platlib": self.site, "scripts": f"{self.prefix}/bin",
                "data": self.prefix, "headers": f"{self.prefix}/include/python{self.version}"}

    def glibc_and_machine(self) -> tuple[int, str]:
        """``manylinux_2_36_x86_64`` → (36, "x86_64"); the schema admits no other form."""
        found = re.fullmatch(r"manylinux_2_(\d+)_(x86_64|aarch64)", self.platform)
        if found is None:
            raise ValueError(f"not a manylinux_2_<glibc>_<machine> tag: {self.platform}")
        return int(found.group(1)), found.group(2)

    def uv_platform(self) -> str:
        """``manylinux_2_36_x86_64`` → ``x86_64-manylinux_2_36`` (uv's spelling). uv names
        glibc versions up to ``UV_NEWEST_GLIBC`` only; a newer image (Debian 13: 2.41) resolves
        as that one, which every wheel built for an older glibc still fits."""
        minor, machine = self.glibc_and_machine()
        return f"{machine}-manylinux_2_{min(minor, UV_NEWEST_GLIBC)}"

    def platforms(self) -> list[str]:
        """Every platform tag the image accepts, newest first: pip does not expand
        ``manylinux_2_36`` to the older glibc versions (and their legacy aliases) itself."""
        newest, machine = self.glibc_and_machine()
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags = []
        for minor in range(newest, 4, -1):
            tags.append(f"manylinux_2_{minor}_{machine}")
            if minor in legacy and (machine == "x86_64" or minor == 17):
                tags.append(f"{legacy[minor]}_{machine}")
        return tags

    def key(self) -> dict[str, Any]:
        return {"version": self.version, "platform": self.platform, "prefix": self.prefix}
