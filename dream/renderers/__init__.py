"""Renderers: a deployment's plan in, files out (pure; dream/renderers/base.py says the shape).

``RENDERERS`` is the table ``doit render:<name>`` picks from; a new renderer is one module here
and one row below.
"""

from __future__ import annotations

from dream.renderers.base import Renderer
from dream.renderers.compose import ComposeRenderer
from dream.renderers.kubernetes import KubernetesRenderer
from dream.renderers.procfile import ProcfileRenderer
from dream.renderers.systemd import SystemdRenderer

RENDERERS: dict[str, Renderer] = {"procfile": ProcfileRenderer(), "compose": ComposeRenderer(),
                                  "kubernetes": KubernetesRenderer(), "systemd": SystemdRenderer()}
