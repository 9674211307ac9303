"""The ``services:`` and ``deployments:`` sections of a recipe (cerberus rules with their docs).

A service is one long-running process (or a one-shot task) with its environment, files,
dependencies, probes, restart and stop policy. A deployment is a named set of services run
together; `doit run:procfile` runs one, the `services` layer puts one into an image.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from dream.recipe.rules import ABSOLUTE, ENV_NAME_RE, MODE_RE, RELATIVE, SIGNAL_RE, doc, form, to_text
from dream.supervisor.plan import signal_number

K8S_LABEL_RE = form(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "a DNS label: at most 63 lowercase letters, digits and -, "
                    "starting and ending with a letter or digit")
K8S_QUANTITY_RE = form(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$", "a Kubernetes quantity such as 512Mi or 10Gi")
SERVICE_NAME_RE = form(r"^[a-z0-9][a-z0-9_-]*$", "a name of lowercase letters, digits, _ -, starting with a letter or digit")
CONDITIONS = ("started", "healthy", "completed_successfully")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def to_seconds(value: Any) -> Any:
    """``2``, ``1.5``, ``"500ms"``, ``"2s"``, ``"1m"`` → seconds as a float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    return value


def to_restart(value: Any) -> Any:
    """YAML reads a bare ``no`` as false; ``restart: no`` means the policy ``"no"``."""
    return "no" if value is False else value


def to_conditions(value: Any) -> Any:
    """``[db, cache]`` means each must have started; a mapping gives each its condition."""
    if isinstance(value, list):
        return {name: "started" for name in value if isinstance(name, str)} if all(
            isinstance(name, str) for name in value) else value
    if isinstance(value, dict):
        return {k: (v.get("condition") if isinstance(v, dict) and set(v) == {"condition"} else v)
                for k, v in value.items()}
    return value


def to_volume(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


def duration(text: str, default: float, **rules: Any) -> dict[str, Any]:
    return {"type": "float", "coerce": to_seconds, "min": 0.0, "default": default, **rules,
            **doc(text + " Seconds, or a string such as `500ms`, `2s`, `1m`.", default)}


MIN_BACKOFF = 0.01  # backoff: 0 restarted a crashing service 256 times a second
MIN_MAX_BACKOFF = 0.1


def _at_least(minimum: float, why: str) -> Any:
    def check(field: str, value: Any, error: Any) -> None:
        if isinstance(value, float) and 0 <= value < minimum:
            error(field, f"must be at least {minimum * 1000:g}ms ({why})")
    return check


def _known_signal(field: str, value: Any, error: Any) -> None:
    """The signal must exist here (``SIGBOGUS`` crashed ``run:procfile`` and PID 1)."""
    if isinstance(value, str) and re.fullmatch(SIGNAL_RE, value):
        try:
            signal_number(value)
        except ValueError as exc:
            error(field, str(exc))


def _no_nul(field: str, value: Any, error: Any) -> None:
    """No process can get a NUL in its environment (execve ends the string there)."""
    if isinstance(value, str) and "\0" in value:
        error(field, "a NUL character cannot be in an environment value")


def _gpu_count(field: str, value: Any, error: Any) -> None:
    """``all`` or a whole number of GPUs from 1 (YAML's ``true`` is no count)."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    error(field, f"must be `all` or a number of GPUs from 1 (got {value!r})")


def _ip_address(field: str, value: Any, error: Any) -> None:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            error(field, f"must be an IP address such as 127.0.0.1 or 0.0.0.0 (got {value!r})")


def shell_or_argv(text: str) -> dict[str, Any]:
    return {"type": ["string", "list"], "empty": False, "schema": {"type": "string", "coerce": to_text},
            **doc(text)}


def _json_field(field: str, value: Any, error: Any) -> None:
    """A dotted path of keys (a whole number indexes a list): ``status``, ``setup.status``."""
    if isinstance(value, str) and not all(value.split(".")):
        error(field, f"must be keys separated by single dots, such as status or setup.status (got {value!r})")


JSON_CHECK = {
    "type": "dict",
    **doc("Also check the response body: it must be JSON whose `field` equals `equals`, for a server "
           "whose health endpoint answers 200 while it is still starting (Cog's `/health-check` "
           "says `{\"status\": \"STARTING\"}` until `READY`)."),
    "schema": {
        "field": {"type": "string", "required": True, "empty": False, "check_with": _json_field,
                  **doc("Where the value is: keys separated by dots (`setup.status`); a whole number "
                         "indexes a list (`items.0.state`).")},
        "equals": {"type": ["string", "integer", "float", "boolean"], "required": True, "nullable": True,
                   **doc("The value it must have (a string, number, boolean or null; `true` is not `1`).")},
    },
}

PROBE = {
    "type": "dict",
    "exactly_one_of": ["exec", "http", "tcp"],
    "schema": {
        "exec": shell_or_argv("Command run with the service's environment, user and working "
                              "directory: a list is run as it is, a string by `/bin/sh -c`. "
                              "Success is exit code 0."),
        "http": {"type": "dict", **doc("An HTTP GET; success is a status from 200 to 399 "
                                        "(https certificates are not verified, as in Kubernetes)."),
                 "schema": {
                     "port": {"type": "integer", "min": 1, "max": 65535,
                              **doc("Port; default: the instance's `PORT`.")},
                     "path": {"type": "string", "regex": ABSOLUTE, "default": "/", **doc("Path.", "/")},
                     "host": {"type": "string", "default": "127.0.0.1", **doc("Host.", "127.0.0.1")},
                     "scheme": {"type": "string", "allowed": ["http", "https"], "default": "http",
                                **doc("Scheme.", "http")},
                     "json": JSON_CHECK}},
        "tcp": {"type": "dict", **doc("Success is an accepted TCP connection."),
                "schema": {
                    "port": {"type": "integer", "min": 1, "max": 65535,
                             **doc("Port; default: the instance's `PORT`.")},
                    "host": {"type": "string", "default": "127.0.0.1", **doc("Host.", "127.0.0.1")}}},
        "initial_delay": duration("Wait this long after the start before the first probe.", 0.0),
        "period": duration("Time between probes.", 1.0),
        "timeout": duration("A probe that takes longer fails.", 1.0),
        "success_threshold": {"type": "integer", "min": 1, "default": 1,
                              **doc("Successes in a row that make a readiness probe pass.", 1)},
        "failure_threshold": {"type": "integer", "min": 1, "default": 30,
                              **doc("Failures in a row that fail the probe: a readiness probe that "
                                     "has not passed by then stops the service (then the restart "
                                     "policy applies); a liveness probe restarts it.", 30)},
    },
}

SEED_FILE = {
    "type": "dict",
    "exactly_one_of": ["src", "content"],
    "schema": {
        "path": {"type": "string", "required": True, "regex": RELATIVE,
                 **doc("Path below the volume (no `..` out of it).")},
        "src": {"type": "string", "empty": False,
                **doc("A host file (UTF-8 text), relative to the YAML file that names it, inside the "
                       "project (as for `config_files[].src`); read at render time.")},
        "content": {"type": "string", **doc("The file's text, inline.")},
        "mode": {"type": "string", "regex": MODE_RE, "default": "0644",
                 **doc("Permission bits.", "0644")},
    },
}

VOLUME = {
    "type": "dict", "coerce": to_volume,
    "schema": {
        "path": {"type": "string", "required": True, "empty": False,
                 **doc("Directory below the deployment's root (the project directory on the host, "
                        "`/` in an image): relative, strictly below the root, no `..` or symlink "
                        "out of it (write `var/lib/db` for `/var/lib/db` in an image).")},
        "persistent": {"type": "boolean", "default": True,
                       **doc("Keep the contents between runs; false wipes the directory each "
                              "time the deployment starts (only ever below the deployment's "
                              "root).", True)},
        "mode": {"type": "string", "regex": MODE_RE, "default": "0755",
                 **doc("Permission bits when the directory is created.", "0755")},
        "seed": {"type": "list", "default": [], "schema": SEED_FILE,
                 **doc("Files copied into the volume when it is empty as the deployment starts (just "
                        "created, or a new, empty mount): never over anything already there, so data "
                        "written later is kept. A non-persistent volume is emptied at each start, so it "
                        "is seeded at each start. Only one service may seed a volume path.", [])},
    },
}

CONFIG_FILE = {
    "type": "dict",
    "exactly_one_of": ["src", "content"],
    "schema": {
        "path": {"type": "string", "required": True, "regex": RELATIVE,
                 **doc("Path below the service's config directory (no `..` out of it), which the "
                        "process finds in `$DREAM_CONFIG_DIR` (also `$XDG_CONFIG_HOME`).")},
        "src": {"type": "string", "empty": False,
                **doc("A host file, relative to the YAML file that names it, inside the project (as "
                        "for `files[].src`); read at render time.")},
        "content": {"type": "string", **doc("The file's text, inline.")},
        "mode": {"type": "string", "regex": MODE_RE, "default": "0644",
                 **doc("Permission bits.", "0644")},
    },
}

SECRET_NAME_RE = form(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                      "a secret name: letters, digits, . _ -, starting with a letter or digit")

SECRET = {
    "type": "dict",
    "schema": {
        "name": {"type": "string", "required": True, "regex": SECRET_NAME_RE,
                 **doc("The secret's name; the file is `<secrets dir>/<name>` unless `path` says otherwise.")},
        "src": {"type": "string", "required": True, "empty": False,
                **doc("The file encrypted with age (`age -r <recipient> -o secrets/db.age`), relative to "
                       "the YAML file that names it, inside the project. Only its ciphertext goes into "
                       "plans, layers and rendered files.")},
        "path": {"type": "string", "regex": ABSOLUTE, "excludes": "env",
                 **doc("Where the process reads it. Default: `/run/secrets/<name>` in an image; on the "
                        "host (`run:procfile`) a private in-memory folder, `$DREAM_SECRETS_DIR/<name>`.")},
        "env": {"type": "string", "regex": ENV_NAME_RE,
                **doc("Give it as this environment variable instead of a file (one trailing newline "
                       "dropped).")},
        "mode": {"type": "string", "regex": MODE_RE, "default": "0400",
                 **doc("Permission bits of the file; it is owned by the service's user.", "0400")},
    },
}

SERVICE = {
    "type": "dict",
    "schema": {
        "description": {"type": "string", **doc("What the service is, for people.")},
        "command": {**shell_or_argv("What to run. A list is an argv, executed without a shell "
                                    "(`$` and quotes are passed as they are); a string is a shell "
                                    "command run by `/bin/sh -c` (so `$PORT` expands)."),
                    "required": True},
        "pre_start": shell_or_argv("A command run before each start of each instance (restarts "
                                   "included), with the service's environment (its `PORT` too), user "
                                   "and working directory; its output goes to the service's log under "
                                   "its name. The service starts when it exits 0; otherwise that start "
                                   "failed, and the restart policy applies as to a failed run."),
        "args": {"type": "list", "default": [], "schema": {"type": "string", "coerce": to_text},
                 **doc("Arguments appended to the command (quoted for the shell when the "
                        "command is a string).", [])},
        "env": {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": ENV_NAME_RE},
                "valuesrules": {"type": "string", "coerce": to_text, "check_with": _no_nul},
                **doc("Environment variables, taken literally (no `$` expansion).", {})},
        "env_files": {"type": "list", "default": [], "schema": {"type": "string", "empty": False},
                      **doc("Env files (`KEY=value` lines) read when the service starts, before "
                             "`env`; relative paths below the deployment's root (no absolute paths, no `..` "
                             "or symlink out of it). A missing file is an error.", [])},
        "working_dir": {"type": "string", "empty": False,
                        **doc("Working directory; default: the deployment's root.")},
        "user": {"type": "string", "empty": False,
                 **doc("`name`, `uid` or `uid:gid` to run as (the supervisor must be root); "
                        "default: the deployment's `user`, else the supervisor's own.")},
        "volumes": {"type": "list", "default": [], "schema": VOLUME,
                    **doc("Directories the service needs, created (and owned by its user) before "
                           "anything starts. A plain string is a persistent volume.", [])},
        "config_files": {"type": "list", "default": [], "schema": CONFIG_FILE,
                         **doc("Files written, fresh at each start of the deployment, into the "
                                "service's config directory.", [])},
        "secrets": {"type": "list", "default": [], "schema": SECRET,
                    **doc("Files encrypted with age, decrypted at each start of the service with the "
                           "operator's identity (`DREAM_AGE_IDENTITY`, `DREAM_AGE_IDENTITY_FILE` or a "
                           "file mounted at `/run/secrets/dream-age-identity`), never at build time; "
                           "given as files or variables. A missing identity or a wrong key: that "
                           "service does not start, the others do (docs/services.md).", [])},
        "ports": {"type": "list", "default": [], "schema": {"type": "integer", "min": 1, "max": 65535},
                  **doc("Ports the service listens on; an image with a `services` layer exposes "
                         "them. Every process also gets `PORT` (see `port_base`).", [])},
        "depends_on": {"type": "dict", "default": {}, "coerce": to_conditions,
                       "keysrules": {"type": "string", "regex": SERVICE_NAME_RE},
                       "valuesrules": {"type": "string", "allowed": list(CONDITIONS)},
                       **doc("Services that must reach a condition before this one starts: a list "
                              "of names (each `started`), or a mapping of name → `started`, "
                              "`healthy` (its readiness probe passed) or `completed_successfully` "
                              "(a one-shot that exited 0).", {})},
        "readiness": {**PROBE, **doc("When the service counts as healthy; dependents waiting for "
                                      "`healthy` start then. Probing ends once it has passed.")},
        "liveness": {**PROBE, **doc("Checked from readiness on; failing it restarts the service "
                                     "(as a failure, under the restart policy).")},
        "restart": {"type": "string", "coerce": to_restart, "allowed": ["no", "on-failure", "always"],
                    "default": "no", **doc("`no`, `on-failure` (a non-zero exit, a signal or a failed "
                                            "probe) or `always`.", "no")},
        "max_restarts": {"type": "integer", "min": 0, "default": 5,
                         **doc("Restarts in a row before giving up (0: never give up). A run longer "
                                "than `max_backoff` starts the count again.", 5)},
        "backoff": duration("Delay before the first restart (at least 10ms); it doubles with each "
                            "restart in a row.", 1.0,
                            check_with=_at_least(MIN_BACKOFF, "a crashing service would restart without pause")),
        "max_backoff": duration("The longest delay between restarts (at least 100ms).", 30.0,
                                check_with=_at_least(MIN_MAX_BACKOFF, "at most 10 restarts a second")),
        "stop_signal": {"type": "string", "regex": SIGNAL_RE, "check_with": _known_signal, "default": "SIGTERM",
                        **doc("Signal that asks the service to stop (sent to its process group).",
                               "SIGTERM")},
        "stop_grace_period": duration("Time from the stop signal to SIGKILL of the service's "
                                      "process group.", 10.0),
        "oneshot": {"type": "boolean", "default": False,
                    **doc("A task that runs once and exits 0 (migrations, key generation, "
                           "downloads); others wait for it with `completed_successfully`.", False)},
        "replicas": {"type": "integer", "min": 1, "default": 1,
                     **doc("Copies to run, named `<service>.1` … with consecutive `PORT`s.", 1)},
        "gpus": {"type": ["string", "integer"], "check_with": _gpu_count,
                 **doc("GPUs the service needs: `all`, or a number from 1 per replica. With a "
                        "number N, replica i (from 0) gets `CUDA_VISIBLE_DEVICES=i*N,…,i*N+N-1` "
                        "(unless its `env` sets that variable), so replicas use GPUs of their "
                        "own; `all` leaves every GPU visible. Container targets reserve them "
                        "(Compose: `deploy.resources.reservations.devices`). Default: none.")},
        "allowed_to_exit": {"type": "boolean", "default": False,
                            **doc("Its end (after any restarts) does not stop the deployment. "
                                   "Otherwise a service that ends stops every other one.", False)},
        "log_file": {"type": "string", "empty": False,
                     **doc("Also append the service's raw output lines to this file (a relative "
                            "path below the deployment's root, as for `volumes`).")},
    },
}

COMPOSE = {
    "type": "dict", "default": {},
    **doc("How `render:compose` renders this deployment (docs/renderers.md).", {}),
    "schema": {
        "network": {"type": "string", "allowed": ["host", "bridge"], "default": "host",
                    **doc("`host`: every container on the host's network, so services reach each "
                           "other on loopback as on the host, on the host's ports; `bridge`: a "
                           "network of the project's own, services reach each other by service "
                           "name, and each declared port is published on `publish_address`.",
                           "host")},
        "publish_address": {"type": "string", "check_with": _ip_address, "default": "127.0.0.1",
                            **doc("Address of this machine that `bridge` publishes ports on "
                                   "(`0.0.0.0`: every interface).", "127.0.0.1")},
    },
}

KUBERNETES = {
    "type": "dict", "default": {},
    **doc("How `render:kubernetes` renders this deployment (docs/renderers.md).", {}),
    "schema": {
        "network": {"type": "string", "allowed": ["host", "cluster"], "default": "host",
                    **doc("`host`: every pod on its node's network (`hostNetwork`), so services "
                           "reach each other on loopback as on the host, on the host's ports; "
                           "`cluster`: the pod network, services reach each other by their "
                           "Service's name (`<deployment>-<service>`).", "host")},
        "namespace": {"type": "string", "regex": K8S_LABEL_RE,
                      **doc("The namespace of every object; default: the one `kubectl` is set to.")},
        "images": {"type": "string", "allowed": ["pushed", "local"], "default": "pushed",
                   **doc("`pushed`: each container runs its service's image by digest from the "
                          "registry `doit push:<deployment>-<service>` sent it to; `local`: the "
                          "local tag `<deployment>-<service>:latest`, never pulled "
                          "(`imagePullPolicy: Never`).", "pushed")},
        "storage": {"type": "string", "regex": K8S_QUANTITY_RE, "default": "1Gi",
                    **doc("The size each persistent volume's PersistentVolumeClaim requests.", "1Gi")},
        "storage_class": {"type": "string", "regex": K8S_LABEL_RE,
                          **doc("The PersistentVolumeClaims' `storageClassName`; default: the cluster's.")},
        "runtime_class": {"type": "string", "regex": K8S_LABEL_RE,
                          **doc("`runtimeClassName` of the pods that request GPUs (e.g. `nvidia`, "
                                 "which NVIDIA's GPU operator creates); default: none.")},
        "age_identity_secret": {"type": "string", "regex": K8S_LABEL_RE, "default": "dream-age-identity",
                                **doc("The Secret (key `identity`) holding the age identity that pods with "
                                       "secrets decrypt them with; the operator creates it: `kubectl "
                                       "create secret generic dream-age-identity --from-file=identity=KEY`.",
                                       "dream-age-identity")},
    },
}

SYSTEMD = {
    "type": "dict", "default": {},
    **doc("How `render:systemd` renders this deployment (docs/renderers.md).", {}),
    "schema": {
        "scope": {"type": "string", "allowed": ["system", "user"], "default": "system",
                  **doc("`system`: units for the system manager (`/etc/systemd/system`, `User=` "
                         "honoured); `user`: units for a user's manager (`systemctl --user`, "
                         "`~/.config/systemd/user`), run as that user.", "system")},
        "root": {"type": "string", "regex": ABSOLUTE,
                 **doc("The deployment's root where the units run (paths of volumes, env files, "
                        "working directories are below it); default: the project.")},
        "config_dir": {"type": "string", "regex": ABSOLUTE,
                       **doc("Where the units read the rendered config files from "
                              "(`<config_dir>/<service>/`); default: the rendered folder's `config/`.")},
        "age_identity": {"type": "string", "regex": ABSOLUTE,
                         **doc("The file on the machine holding the age identity that decrypts the "
                                "services' secrets (`LoadCredential=`); default `/etc/dream/age-identity`.")},
    },
}

SIZE = {"type": ["string", "integer"], "coerce": to_text,
        "regex": form(r"^\s*\d+\s*([KMGT]i?B?|[kmgt])?\s*$", "a size such as 512M or 2G")}
VM = {
    "type": "dict", "default": {},
    **doc("The deployment's VM (`render:vm`, `run:vm`; docs/renderers.md). Its packages are "
           "pinned by `doit lock:vm -d NAME` in `recipes/<recipe>.vm.lock.json`.", {}),
    "schema": {
        "packages": {"type": "list", "schema": {"type": "string", "regex": form(r"^[a-z0-9][a-z0-9+.-]+$", "a Debian package name")},
                     **doc("Debian packages added to the VM's own (a kernel, `linux-image-cloud-amd64`; "
                            "`systemd-sysv`, `udev`, `dbus`, `kmod`, `busybox-static`).")},
        "memory": {**SIZE, **doc("The VM's memory (e.g. `512M`, `2G`).", "512M")},
        "cpus": {"type": "integer", "min": 1, "max": 64, **doc("Its virtual CPUs.", 2)},
        "disk_size": {**SIZE, **doc("The root disk's size (the image and the VM's packages must fit).", "1G")},
        "data_size": {**SIZE, **doc("The persistent data disk's size (the persistent volumes live there).", "1G")},
        "exclude": {"type": "list", "schema": {"type": "string", "regex": ABSOLUTE},
                    **doc("Paths (globs) of the VM's own packages left out, beside the docs, man pages "
                           "and locales that are always left out.")},
    },
}

DEPLOYMENT = {
    "type": "dict",
    "schema": {
        "services": {"type": "list", "schema": {"type": "string", "regex": SERVICE_NAME_RE},
                     **doc("The services it runs, in this order; default: every service of the recipe.")},
        "default": {"type": "boolean", "default": False,
                    **doc("Run by `doit run:procfile` when no deployment is named (with one "
                           "deployment in the project, that one is the default).", False)},
        "env": {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": ENV_NAME_RE},
                "valuesrules": {"type": "string", "coerce": to_text, "check_with": _no_nul},
                **doc("Environment of every service (the Procfile renderer writes it to `.env`).", {})},
        "port_base": {"type": "integer", "min": 1, "max": 65535, "default": 5000,
                      **doc("`PORT` of the first service; each next service gets 100 more and "
                             "each replica 1 more (honcho's and foreman's rule).", 5000)},
        "user": {"type": "string", "empty": False, **doc("Default `user` of its services.")},
        "log_dir": {"type": "string", "empty": False,
                    **doc("Write each process's raw output to `<log_dir>/<service>.<n>.log` too (a "
                           "relative path below the deployment's root, as for `volumes`).")},
        "compose": COMPOSE,
        "kubernetes": KUBERNETES,
        "systemd": SYSTEMD,
        "vm": VM,
    },
}

RENDERER_OPTIONS = {"compose": COMPOSE, "kubernetes": KUBERNETES, "systemd": SYSTEMD, "vm": VM}  # deployment keys that hold one renderer's settings


def option_defaults(rule: dict[str, Any]) -> dict[str, Any]:
    """A renderer's settings when a deployment gives none (the implicit deployment is never
    normalized by cerberus)."""
    return {key: field["default"] for key, field in rule["schema"].items() if "default" in field}


SERVICES = {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": SERVICE_NAME_RE},
            "valuesrules": SERVICE,
            **doc("Services by name. Modules add services and recipes change fields of imported ones.", {})}

DEPLOYMENTS = {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": SERVICE_NAME_RE},
               "valuesrules": DEPLOYMENT,
               **doc("Deployments by name. Without any, a recipe with services has one, named "
                      "like the recipe, that runs all of them.", {})}

SERVICES_LAYER = {
    "type": "dict",
    **doc("The supervisor and one deployment (kind `services`): `docker run <image>` starts the "
           "deployment with dream's supervisor as PID 1. Needs `python3` in a Debian layer."),
    "schema": {
        "deployment": {"type": "string", "regex": SERVICE_NAME_RE,
                       **doc("Which deployment of this recipe; default: its only or default one.")},
    },
}
