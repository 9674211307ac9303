"""Where registry credentials come from, in this order:

1. ``DREAM_REGISTRY_USERNAME`` / ``DREAM_REGISTRY_PASSWORD`` for the hosts named in
   ``DREAM_REGISTRY_HOST`` (comma-separated; for CI secrets). They are never sent to another
   host: a recipe naming some other registry must not be a way to collect them;
2. the Docker config file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``credHelpers[host]``, then an ``auths`` entry (``auth`` or ``username``/``password``), then
   ``credsStore`` — the helpers are run as ``docker-credential-<name> get``, as docker does.

Credentials live only in memory: they are never printed, logged or written anywhere by dream.
``repr`` hides the secret so that an error report can never show it by accident.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream.errors import DreamError


@dataclass(frozen=True)
class Credentials:
    username: str
    secret: str = field(repr=False)
    origin: str = ""  # where they came from, for error messages

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, origin={self.origin!r})"


def docker_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(directory) / "config.json"


def credentials_for(host: str) -> Credentials | None:
    """The credentials for ``host`` (``name:port``), or None for anonymous access."""
    username = os.environ.get("DREAM_REGISTRY_USERNAME")
    password = os.environ.get("DREAM_REGISTRY_PASSWORD")
    if username and password:
        hosts = {h.strip().lower() for h in os.environ.get("DREAM_REGISTRY_HOST", "").split(",") if h.strip()}
        if not hosts:
            raise DreamError("DREAM_REGISTRY_USERNAME/PASSWORD are set: name the registry they are "
                             "for in DREAM_REGISTRY_HOST (host:port, comma-separated)")
        if host in hosts:
            return Credentials(username, password, "DREAM_REGISTRY_USERNAME/PASSWORD")
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DreamError(f"cannot read the Docker config: {exc}", None, str(path)) from None
    if not isinstance(config, dict):
        raise DreamError("the Docker config is not a JSON object", None, str(path))
    helper = _mapping(config, "credHelpers", path).get(host)
    if helper:
        return _from_helper(str(helper), host)
    entry = _auths_entry(_mapping(config, "auths", path), host)
    if entry:
        return _from_entry(entry, host, path)
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], host)
    return None


def _mapping(config: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise DreamError(f"{key} must be a JSON object", None, str(path))
    return value


def _auths_entry(auths: dict[str, Any], host: str) -> dict[str, Any] | None:
    """Docker keys ``auths`` by host, sometimes written as a URL (``https://host/v1/``)."""
    for key, entry in auths.items():
        bare = key.split("://", 1)[-1].split("/", 1)[0].lower()
        if bare == host and isinstance(entry, dict):
            return entry
    return None


def _from_entry(entry: dict[str, Any], host: str, path: Path) -> Credentials | None:
    if entry.get("auth"):
        try:
            username, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise DreamError(f"auths.{host}.auth is not base64 of user:password", None, str(path)) from None
        return Credentials(username, secret, str(path))
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], str(path))
    return None  # an empty entry: docker writes these when a helper holds the secret


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=host, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise DreamError(f"the Docker config names credential helper {helper!r}, "
                         f"but {program} is not on PATH") from None
    except OSError as exc:
        raise DreamError(f"cannot run {program}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise DreamError(f"{program} did not answer within 30 s") from None
    if done.returncode != 0:
        if "not found" in (done.stdout + done.stderr).lower():
            return None  # the helper's way of saying "no credentials for this host"
        raise DreamError(f"{program} get failed (exit {done.returncode})")
    try:
        answer = json.loads(done.stdout)
        return Credentials(answer["Username"], answer["Secret"], program)
    except (ValueError, KeyError, TypeError):
        raise DreamError(f"{program} get gave an answer that is not Username/Secret JSON") from None
