"""Render a deployment as a ``Procfile`` and ``.env`` that honcho and foreman read with the
meaning the supervisor gives it.

What survives: argv and env values with ``$``, quotes, ``#``, spaces, tabs and newlines (each
line is a POSIX sh script; a line that would hold a newline is passed through
``eval "$(printf '%b' …)"``), the working directory, volumes (and their seed files, copied in
when the volume is empty), config files, ``pre_start`` (run by the line before ``exec``: a
failure ends the line), ``PORT`` (the
``.env`` holds the base, so honcho's and foreman's own rule gives the same ports) and
``DREAM_*``. What a Procfile cannot say — start order, readiness, restarts, users — is listed
in the file's header: those need `doit run:procfile`.

Pure (dream/renderers/base.py): the env files' variables come in through the `Target`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from dream.errors import DreamError
from dream.renderers.base import File, Plan, Target

HONCHO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def dotenv_value(name: str, value: str) -> str:
    """A value as ``"…"`` that honcho (shlex, then ``\\n`` → newline) and foreman (``\\n`` →
    newline, ``\\X`` → X) both read back unchanged."""
    if re.search(r"\\[nt]", value):
        raise DreamError(f"{name}: a backslash before n or t cannot be written to .env (honcho "
                         "turns it into a newline or tab); set it in a service's env instead")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines() breaks, less \n


def one_line(script: str) -> str:
    """A shell script as one Procfile line: as it is, or through printf when it holds a line
    break (honcho splits the Procfile with ``splitlines()``: a form feed or U+2028 ends a line
    too), each such character written as printf's ``\\0nnn`` octal bytes."""
    if "\n" not in script and not any(char in LINE_BREAKS for char in script):
        return script
    encoded = script.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("'", "'\\''")
    for char in LINE_BREAKS:
        encoded = encoded.replace(char, "".join(f"\\0{byte:03o}" for byte in char.encode()))
    return f"eval \"$(printf '%b' '{encoded}')\""


def fits_dotenv(value: str) -> bool:
    """honcho reads .env with ``splitlines()``: a carriage return (or another line break Python
    knows: form feed, U+2028 …) ends the line there, and no escape brings one back."""
    return not any(char in LINE_BREAKS for char in value)


def service_line(service: Mapping[str, Any], deployment: str, root: Path, config_dir: Path,
                 deployment_env: Mapping[str, str] | None = None,
                 env_files: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The shell script honcho runs for one service; ``deployment_env`` holds the deployment's
    variables that .env cannot carry, exported first, then the service's env files (their
    variables in ``env_files``, by name), then its own env, which wins."""
    steps = [f"cd {shlex.quote(str(root / service['working_dir']) if service['working_dir'] else str(root))}"]
    for index, volume in enumerate(service["volumes"]):
        path = shlex.quote(str(root / volume["path"]))
        steps.append(f"mkdir -p {path}" if volume["persistent"] else f"rm -rf {path} && mkdir -p {path}")
        if volume.get("seed"):
            steps.append(seed_step(volume, str(root / volume["path"]), config_dir.parent / seed_folder(service["name"], index)))
    env: dict[str, str] = dict(deployment_env or {})
    for name in service["env_files"]:
        if env_files is None or name not in env_files:
            raise DreamError(f"service {service['name']}: env file {name} was not read before rendering")
        env.update(env_files[name])
    env.update(service["env"])
    env["DREAM_DEPLOYMENT"] = deployment
    env["DREAM_SERVICE"] = service["name"]
    if service["config_files"]:
        env["DREAM_CONFIG_DIR"] = env["XDG_CONFIG_HOME"] = str(config_dir / service["name"])
    assignments = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    assignments.append('DREAM_INSTANCE="${HONCHO_PROCESS_NAME:-${PS:-%s.1}}"' % service["name"])
    steps.append("export " + " ".join(assignments))
    if service.get("pre_start"):
        steps.append(shlex.join(service["pre_start"]))  # a failure ends the line: the service does not start
    command = shlex.join(service["argv"])
    if service["oneshot"] and not service["allowed_to_exit"]:
        steps.append(f"{{ {command} || exit $?; exec sleep infinity; }}")  # honcho stops all on any exit
    elif service["oneshot"] or service["allowed_to_exit"]:
        steps.append(f"{{ {command}; exec sleep infinity; }}")
    else:
        steps.append(f"exec {command}")
    return one_line(" && ".join(steps))


def seed_folder(service: str, index: int) -> str:
    """Where a volume's seed files are rendered, relative to the output folder."""
    return f"seed/{service}/{index}"


def seed_step(volume: Mapping[str, Any], path: str, folder: Path) -> str:
    """Copy the rendered seed files (below ``folder``) into the volume at ``path`` when it is
    empty, as the supervisor does (``install -D`` makes the folders and sets each mode)."""
    copies = " && ".join(f"install -D -m {item['mode']} {shlex.quote(str(folder / item['path']))} "
                         f"{shlex.quote(path + '/' + item['path'])}" for item in volume["seed"])
    return f'{{ [ -n "$(ls -A {shlex.quote(path)})" ] || {{ {copies}; }}; }}'


class ProcfileRenderer:
    """``build/<deployment>/procfile/``: Procfile, .env and the config files."""

    name = "procfile"

    def render(self, plan: Plan, target: Target) -> list[File]:
        return render(plan, target)


def render(plan: Plan, target: Target) -> list[File]:
    """The config files (in service order), then Procfile and .env, all under ``target.out``."""
    root, out = target.root, target.out
    header = [f"# Deployment {plan['name']}, rendered by dream (`doit render:procfile`); do not edit.",
              f"# Run: honcho -d {out} start   (or: foreman start -d {out} -f {out}/Procfile -e {out}/.env)",
              "# A Procfile starts every process at once and stops all when one exits: start order,",
              "# readiness, restarts and users need `doit run:procfile`, which runs the full model."]
    lines: list[str] = []
    files: list[File] = []
    inline = {k: v for k, v in plan["env"].items() if not fits_dotenv(v)}
    if inline:
        header.append("# " + ", ".join(inline) + ": exported by each line (.env cannot hold a carriage return or line break)")
    for service in plan["services"]:
        name = service["name"]
        if not HONCHO_NAME.match(name):
            raise DreamError(f"service name {name!r} cannot be a Procfile process name")
        notes = []
        if service["depends_on"]:
            notes.append("waits for " + ", ".join(f"{d} ({c})" for d, c in service["depends_on"].items()))
        if service.get("user"):
            notes.append(f"runs as {service['user']}")
        if service["replicas"] > 1:
            notes.append(f"{service['replicas']} replicas: honcho start -c {name}={service['replicas']}")
        if service["restart"] != "no":
            notes.append(f"restart {service['restart']}")
        if service.get("secrets"):
            notes.append("secrets " + ", ".join(secret["name"] for secret in service["secrets"])
                         + " (only dream's supervisor decrypts them)")
        if notes:
            header.append(f"# {name}: " + "; ".join(notes) + " (not expressed here)")
        lines.append(f"{name}: {service_line(service, plan['name'], root, out / 'config', inline, target.env_files)}")
        for item in service["config_files"]:
            files.append(File(f"config/{name}/{item['path']}", item["content"], int(item["mode"], 8)))
        for index, volume in enumerate(service["volumes"]):
            for item in volume.get("seed", []):
                files.append(File(f"{seed_folder(name, index)}/{item['path']}", item["content"], int(item["mode"], 8)))
    env_lines = [dotenv_value(k, v) for k, v in plan["env"].items() if k not in inline]
    env_lines.append(f'PORT="{plan["port_base"]}"')
    files.append(File("Procfile", "\n".join(header + lines) + "\n", 0o644))
    files.append(File(".env", "\n".join(env_lines) + "\n", 0o600))
    return files
