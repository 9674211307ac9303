"""How to reach each registry host: plain http or TLS, and which CA to trust.

Kept apart from the client so that loading recipes does not import the HTTP stack.
"""

from __future__ import annotations

import os
from pathlib import Path

from dream.recipe.model import HostSettings  # plain data of the recipe; re-exported here

__all__ = ["HostSettings", "configure", "settings_for"]

_CONFIGURED: dict[str, HostSettings] = {}


def configure(hosts: dict[str, HostSettings]) -> None:
    """Register the recipes' ``registries`` settings (called once, when tasks are made)."""
    _CONFIGURED.update(hosts)


def settings_for(host: str) -> HostSettings:
    """A recipe's ``registries.<host>`` over the environment: ``DREAM_PLAIN_HTTP``
    (comma-separated hosts), ``DREAM_REGISTRY_CA``, else the CA docker and podman would use
    (``/etc/{docker,containers}/certs.d/<host>/ca.crt``)."""
    configured = _CONFIGURED.get(host, HostSettings())
    plain = host in {h.strip() for h in os.environ.get("DREAM_PLAIN_HTTP", "").split(",") if h.strip()}
    ca_file = configured.ca_file or os.environ.get("DREAM_REGISTRY_CA") or None
    for directory in ("/etc/docker/certs.d", "/etc/containers/certs.d"):
        candidate = Path(directory) / host / "ca.crt"
        if ca_file is None and candidate.is_file():
            ca_file = str(candidate)
    plain_http = configured.plain_http if configured.plain_http is not None else (True if plain else None)
    return HostSettings(plain_http=plain_http, ca_file=ca_file)
