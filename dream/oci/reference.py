"""Image references: ``host[:port]/repository[:tag][@sha256:…]``.

dream never guesses a registry: a reference must start with its host (a name with a dot or a
port, ``localhost``, or an IP address), so that what is pushed or pulled is always written out.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from dream.errors import DreamError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                     r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# what the recipe schema accepts; parse_reference says exactly what is wrong
REFERENCE_PATTERN = r"^[^\s/]+/[^\s]+$"


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``tag`` and ``digest`` may both be empty (a bare repository)."""

    host: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``host/repository``: where blobs live, and what the store records as a source."""
        return f"{self.host}/{self.repository}"

    @property
    def selector(self) -> str:
        """What goes after ``/manifests/``: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest="")

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name + (f":{self.tag}" if self.tag else "")
        return text + (f"@{self.digest}" if self.digest else "")


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``[::1]``, with or without a port."""
    name = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def parse_reference(text: str, what: str = "image reference") -> Reference:
    """Parse ``text``; raise a DreamError that says which part is wrong."""
    host, slash, rest = text.partition("/")
    if not slash or not _is_host(host):
        raise DreamError(f"{what} {text!r} must start with the registry host, "
                         "e.g. registry.example:5000/team/app:1.0")
    if "@" in host:  # user:password@host: the text is not repeated, it holds a secret
        raise DreamError(f"{what}: credentials must not be written into a reference; use the "
                         "Docker config or DREAM_REGISTRY_USERNAME/PASSWORD")
    if not HOST_RE.match(host):
        raise DreamError(f"{what} {text!r}: {host!r} is not a registry host (a name or [IPv6 "
                         "address], with an optional :port)")
    digest = ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise DreamError(f"{what} {text!r}: the digest must be sha256: and 64 hex digits")
    repository, tag = rest, ""
    if ":" in rest.rsplit("/", 1)[-1]:
        repository, tag = rest.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise DreamError(f"{what} {text!r}: {tag!r} is not a valid tag")
    if not REPOSITORY_RE.match(repository):
        raise DreamError(f"{what} {text!r}: repository {repository!r} must be lower-case "
                         "path components of letters, digits and . _ -")
    return Reference(host.lower(), repository, tag, digest)
