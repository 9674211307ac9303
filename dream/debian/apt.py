"""apt, pointed at a private state directory: the machine's apt *configuration* (sources,
keyrings, proxies, mirrors) is used as it is, the machine's apt *state* is never touched.

The package lists, the empty dpkg status the resolver starts from and the download cache all
live under dream's cache directory (``DREAM_CACHE``, default ``~/.cache/dream``).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from dream.debian.sources import write_sources
from dream.download_cache import cache_dir, download_scratch
from dream.errors import DreamError
from dream.fetch_plan import run_download
from dream.store.layout import file_sha256

_UPDATED: set[Path] = set()  # state directories whose lists this process fetched
_UPDATING: dict[Path, threading.Lock] = {}  # one `apt-get update` at a time per state directory
_UPDATING_LOCK = threading.Lock()  # (layer tasks run in threads: apt's own lock would fail one)
_UNKNOWN = re.compile(r"Unable to locate package (\S+)|Package '([^']+)' has no installation candidate")
_INST = re.compile(r"^Inst (\S+) \((\S+) .*\[([^\]]+)\]\)")


@dataclass(frozen=True)
class Package:
    """A pinned .deb: what the lock records (no host names: the file is found via apt)."""

    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class VanishedPins(DreamError):
    """Locked packages that the apt sources no longer have (and the cache never had)."""

    def __init__(self, packages: list[Package]) -> None:
        shown = ", ".join(f"{p.name} {p.version}" for p in packages[:4])
        more = f" and {len(packages) - 4} more" if len(packages) > 4 else ""
        super().__init__(f"{shown}{more} no longer in the apt sources")
        self.packages = packages


class UnknownPackages(DreamError):
    """Names the apt sources have no installable package for (a typo, another suite's name)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"no Debian package {', '.join(map(repr, names))} in the apt sources")
        self.names = names


class Apt:
    """Resolve and download packages for one architecture with a private apt state."""

    def __init__(self, architecture: str = "amd64", root: Path | None = None, suite: str | None = None) -> None:
        self.architecture = architecture
        self.suite = suite
        state = (root or cache_dir()) / "apt"
        self.root = (state / suite / architecture) if suite else state / architecture
        self.debs = (root or cache_dir()) / "debs"
        self.status = self.root / "status"

    def _options(self) -> list[str]:
        options = ["-o", f"Dir::State={self.root / 'state'}",
                   "-o", f"Dir::State::status={self.status}",
                   "-o", f"Dir::Cache={self.root / 'cache'}",
                   "-o", f"APT::Architecture={self.architecture}",
                   "-o", "APT::Get::AllowUnauthenticated=false",
                   "-o", "quiet=1"]
        if self.suite:  # the machine's sources re-pointed at that suite (dream/debian/sources.py)
            options += ["-o", f"Dir::Etc::SourceList={self.root / 'sources.list'}",
                        "-o", f"Dir::Etc::SourceParts={self.root / 'sources.list.d'}"]
        if os.geteuid() == 0:
            options += ["-o", "APT::Sandbox::User=root"]  # the _apt user cannot write our cache
        return options

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        if shutil.which(tool) is None:
            raise DreamError(f"{tool} not found: debian layers need apt (run on Debian or Ubuntu)")
        result = run_download([tool, *self._options(), *args], cwd=cwd, env={**os.environ, "LC_ALL": "C"})
        if result.returncode != 0:
            detail = " ".join(line.strip() for line in result.stderr.splitlines()
                              if line.startswith(("E:", "W:")) or "rror" in line) or result.stderr.strip()
            raise DreamError(f"{tool} {' '.join(args[:2])} failed: {detail}")
        return result.stdout

    def update(self, again: bool = False) -> None:
        """Fetch package lists from the machine's configured sources into the private state;
        once per process and state directory (locking several images, or an image's kept and
        re-resolved Debian layers, asks each time), unless ``again``. Threads asking at once
        wait for the first: a fetch the others have just waited for counts as theirs."""
        with _UPDATING_LOCK:
            lock = _UPDATING.setdefault(self.root, threading.Lock())
        done = self.root in _UPDATED
        with lock:
            if self.root in _UPDATED and (not again or not done):
                return
            self._update()

    def _update(self) -> None:
        for directory in ("state/lists/partial", "cache/archives/partial"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        self.status.touch()
        if self.suite:
            write_sources(self.suite, self.root / "sources.list.d")
        # Another dream process (a second `doit lock`, a build) may be updating these lists:
        # apt-get does not wait for its own lock, it fails ("Could not get lock"), so wait here.
        with open(self.root / "update.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._run("apt-get", "update")
        _UPDATED.add(self.root)

    def has_lists(self) -> bool:
        lists = self.root / "state" / "lists"
        return lists.is_dir() and any(p.name.endswith("Packages") or "_Packages." in p.name
                                      for p in lists.iterdir())

    def resolve(self, packages: list[str], essential: bool, recommends: bool,
                prefer: dict[str, str] | None = None) -> list[Package]:
        """The full set of packages apt would install into an empty system, pinned.

        ``prefer`` maps names to versions to keep (the previous lock's): where the fresh
        solution holds a package at another version and the preferred one is still in the
        sources, apt is asked again with those versions requested; if that has no solution
        (a new package needs the newer version), the fresh solution stands.
        """
        wanted = list(packages) + (["?essential"] if essential else [])
        chosen = self._simulate(wanted, recommends)
        if not chosen:
            raise DreamError(f"apt resolved nothing for {', '.join(packages)}")
        moved = {name: prefer[name] for name, version in chosen
                 if prefer and name in prefer and prefer[name] != version}
        if moved:
            still = self._shown(f"{name}={version}" for name, version in moved.items())
            requests = [f"{name}={version}" for name, version in moved.items() if (name, version) in still]
            if requests:
                try:
                    chosen = self._simulate(wanted + requests, recommends)
                except DreamError:
                    pass
        found = self._shown(f"{name}={version}" for name, version in chosen)
        missing = [f"{n}={v}" for n, v in chosen if (n, v) not in found]
        if missing:
            raise DreamError(f"apt-cache has no metadata for {', '.join(missing)}")
        return [found[key] for key in chosen]

    def _simulate(self, wanted: list[str], recommends: bool) -> list[tuple[str, str]]:
        flag = "--install-recommends" if recommends else "--no-install-recommends"
        try:
            plan = self._run("apt-get", "install", "--simulate", flag, *wanted)
        except DreamError as exc:
            unknown = _UNKNOWN.findall(str(exc))
            if unknown:
                raise UnknownPackages([a or b for a, b in unknown]) from None
            raise
        return sorted({(m.group(1).split(":")[0], m.group(2)) for m in map(_INST.match, plan.splitlines()) if m})

    def _shown(self, specs: Iterable[str]) -> dict[tuple[str, str], Package]:
        """``apt-cache show`` of ``name=version`` specs: what the sources hold, by (name, version)."""
        specs = list(specs)
        found: dict[tuple[str, str], Package] = {}
        if not specs:
            return found
        try:
            shown = self._run("apt-cache", "show", *specs)
        except DreamError as exc:
            if "No packages found" in str(exc):  # none of them is there: no error, an answer
                return found
            raise
        for stanza in shown.split("\n\n"):
            fields = _fields(stanza)
            if "Package" not in fields:
                continue
            key = (fields["Package"], fields["Version"])
            if key in found or fields.get("Architecture") not in (self.architecture, "all"):
                continue
            found[key] = Package(fields["Package"], fields["Version"], fields["Architecture"],
                                 fields["Filename"], fields["SHA256"], int(fields["Size"]))
        return found

    def uncached(self, packages: list[Package]) -> list[Package]:
        """The packages whose verified .deb is not in the download cache."""
        return [p for p in packages if not (self.debs / f"{p.sha256}.deb").exists()]

    def vanished(self, packages: list[Package]) -> list[Package]:
        """The pinned packages that neither the apt sources (with these exact bytes) nor the
        download cache can provide any more: Debian drops superseded versions from its suites."""
        uncached = self.uncached(packages)
        present = self._shown(f"{p.name}={p.version}" for p in uncached)
        return [p for p in uncached
                if (found := present.get((p.name, p.version))) is None or found.sha256 != p.sha256]

    def fetch(self, packages: list[Package]) -> dict[str, Path]:
        """Paths of verified .debs in the cache, downloading the missing ones through apt."""
        self.debs.mkdir(parents=True, exist_ok=True)
        paths = {p.name: self.debs / f"{p.sha256}.deb" for p in packages}
        missing = [p for p in packages if not paths[p.name].exists()]
        if not missing:
            return paths
        if not self.has_lists():
            self.update()
        with download_scratch(self.debs) as scratch:
            try:
                self._run("apt-get", "download", *(f"{p.name}={p.version}" for p in missing), cwd=Path(scratch))
            except DreamError:
                self.update(again=True)  # lists may be old; one retry with fresh lists
                gone = self.vanished(missing)
                if gone:
                    raise VanishedPins(gone) from None
                self._run("apt-get", "download", *(f"{p.name}={p.version}" for p in missing), cwd=Path(scratch))
            for package in missing:
                got = next(Path(scratch).glob(f"{package.name}_*.deb"), None)
                if got is None:
                    raise DreamError(f"apt did not download {package.name}={package.version}")
                digest = file_sha256(got)
                if digest != package.sha256:
                    raise DreamError(f"{package.name}={package.version}: sha256 {digest} does not "
                                     f"match the lock's {package.sha256}")
                os.replace(got, paths[package.name])
        return paths


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields
