"""A PEP 517 build backend of a few lines for this one-module package: a wheel from the
[project] table of pyproject.toml (name, version, entry points), with the standard library only,
so that pip installs the plugin with no network and no build tools."""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _project() -> dict[str, Any]:
    return tomllib.loads((HERE / "pyproject.toml").read_text())["project"]


def _files() -> dict[str, bytes]:
    project = _project()
    module = project["name"].replace("-", "_")
    info = f"{module}-{project['version']}.dist-info"
    entry_points = "".join(f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
                           for group, points in project.get("entry-points", {}).items())
    return {
        f"{module}.py": (HERE / f"{module}.py").read_bytes(),
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
                             f"Summary: {project.get('description', '')}\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: build_backend.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": entry_points.encode(),
    }


def build_wheel(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    project = _project()
    module = project["name"].replace("-", "_")
    name = f"{module}-{project['version']}-py3-none-any.whl"
    files = _files()
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
              for path, data in files.items()]
    record_path = f"{module}-{project['version']}.dist-info/RECORD"
    with zipfile.ZipFile(Path(wheel_directory) / name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr(record_path, "\n".join([*record, f"{record_path},,"]) + "\n")
    return name
