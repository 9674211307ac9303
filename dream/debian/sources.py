"""The machine's apt sources, re-pointed at another Debian suite.

A `debian` layer may name its suite (``trixie`` on a ``bookworm`` machine): the same mirrors,
components, options and keyrings (``Signed-By``) the machine is configured with, with each
suite of the machine's release (``bookworm``, ``bookworm-updates``, ``bookworm-security`` …)
renamed to the wanted one. No host name is ever written by dream: every URI comes from the
machine's own files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from dream.errors import DreamError


def machine_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """The machine's release codename (``VERSION_CODENAME``), which its sources name."""
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME" and value.strip('"'):
                return value.strip('"')
    except OSError:
        pass
    raise DreamError("cannot tell this machine's Debian release (no VERSION_CODENAME in /etc/os-release), "
                     "so a debian layer's `suite` cannot re-point its apt sources")


def source_files() -> list[Path]:
    """The machine's source files, where its apt configuration says they are."""
    if shutil.which("apt-config") is None:
        raise DreamError("apt-config not found: debian layers need apt (run on Debian or Ubuntu)")
    dump = subprocess.run(["apt-config", "shell", "LIST", "Dir::Etc::sourcelist/f",
                           "PARTS", "Dir::Etc::sourceparts/d"], capture_output=True, text=True, check=False)
    found = dict(re.findall(r"^(LIST|PARTS)='(.*)'$", dump.stdout, re.M))
    files = [Path(found.get("LIST", "/etc/apt/sources.list"))]
    parts = Path(found.get("PARTS", "/etc/apt/sources.list.d"))
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def _renamed(suite: str, codename: str, wanted: str) -> str:
    if suite == codename:
        return wanted
    if suite.startswith(codename + "-"):
        return wanted + suite[len(codename):]
    return suite


def repoint(text: str, deb822: bool, codename: str, wanted: str) -> str:
    """One source file's text with the machine's suites renamed (deb822 or one-line style)."""
    out = []
    for line in text.splitlines():
        if deb822:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == "suites":
                line = f"{key}: " + " ".join(_renamed(s, codename, wanted) for s in value.split())
        else:
            match = re.match(r"^(\s*deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?\S+\s+)(\S+)(.*)$", line)
            if match:
                line = match.group(1) + _renamed(match.group(2), codename, wanted) + match.group(3)
        out.append(line)
    return "\n".join(out) + "\n"


def write_sources(wanted: str, into: Path) -> None:
    """Write the re-pointed copies of the machine's source files into ``into`` (a parts dir)."""
    codename = machine_codename()
    into.mkdir(parents=True, exist_ok=True)
    for old in into.iterdir():
        old.unlink()
    renamed = wanted == codename
    for index, path in enumerate(source_files()):
        text = path.read_text()
        new = repoint(text, path.suffix == ".sources", codename, wanted)
        renamed = renamed or new.splitlines() != text.splitlines()
        (into / f"{index:02d}-{path.name}").write_text(new)
    if not renamed:
        raise DreamError(f"suite {wanted}: this machine's apt sources name no {codename} suite to re-point")
