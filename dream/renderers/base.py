"""What a renderer is: a deployment's plan in, a list of files out, and nothing else.

A renderer turns the plan (dream/services/plan.py's ``build_plan``, the dict the supervisor
reads) into the files another tool runs: a Procfile for honcho or foreman today; a systemd
unit, a Compose file, Kubernetes manifests later. It is a pure function, the shape of
honcho's exporters: it reads no file, writes no file, starts nothing. Whatever it needs from
the host (the env files' contents, later the image a publisher pushed) comes in through the
`Target`, read beforehand by the caller (dream/managers/host.py for the host); the caller
writes the `File` list. So a renderer is tested on strings, and one plan always renders to
the same files.

A new renderer goes into ``dream/renderers/<name>.py`` as a class with ``name`` and
``render``, and into the ``RENDERERS`` table (dream/renderers/__init__.py). It may import
dream.services, dream.supervisor (the plan's types and rules) and dream.errors; never a
manager, the store or the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

Plan = Mapping[str, Any]
"""A deployment compiled by dream/services/plan.py's ``build_plan`` (the supervisor's JSON)."""


@dataclass(frozen=True)
class File:
    """One file a renderer produces: ``path`` relative to the output folder, its text, its mode."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Target:
    """Where the rendered files go and what they may refer to, read before rendering.

    ``root`` is the deployment's root where it runs (the project on the host), ``out`` the
    folder the files are written to (rendered files may name it), ``env_files`` the variables
    of each env file the plan names, by the name the plan gives it (``services[].env_files``).
    ``images`` is the image reference that runs each service (``<deployment>-<service>:latest``
    once ``render:images`` and a load made it, or ``repo@sha256:…``), for the renderers that
    run services in containers; ``options`` the deployment's settings for this renderer (the
    deployment's ``<renderer>:`` mapping, e.g. ``compose: {network: bridge}``), normalized.
    """

    root: Path
    out: Path
    env_files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


class Renderer(Protocol):
    """A pure function from a plan to files (see the module's docstring)."""

    name: str
    """The renderer's name: ``doit render:<name>`` and ``build/<deployment>/<name>/``."""

    def render(self, plan: Plan, target: Target) -> list[File]:
        """The files, in a fixed order; a plan the format cannot express is a `DreamError`."""
        ...
