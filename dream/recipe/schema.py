"""The recipe schema: every field with its type, default and meaning.

The ``meta.doc`` strings are the reference documentation: ``python -m dream.recipe.docs`` prints
them as Markdown (docs/recipe-reference.md is that output). Keep them true.

Cerberus `*of` rules do no normalisation (see shared research, deps.md §3), so kinds of layers
and of file entries use one dict schema plus the custom rule ``exactly_one_of``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import shlex
from typing import TYPE_CHECKING, Any

from dream.recipe.model import CUDA_FOLLOW
from dream.recipe.rules import ABSOLUTE, ENV_NAME_RE, MODE_RE, RELATIVE, SIGNAL_RE, doc, form, to_text
from dream.oci.reference import REFERENCE_PATTERN

if TYPE_CHECKING:
    from dream.recipe.validator import RecipeValidator

form(REFERENCE_PATTERN, "a reference such as host/repository or host/repository:tag")
from dream.recipe.services_schema import DEPLOYMENTS, SERVICE_NAME_RE, SERVICES, SERVICES_LAYER

NAME_RE = form(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$",
               "an image name: lowercase letters, digits and . _ - between them, parts joined by /")
LAYER_NAME_RE = form(r"^[a-z0-9][a-z0-9._-]*$", "a layer name: lowercase letters, digits, . _ -, starting with a letter or digit")
TAG_RE = form(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", "a tag: up to 128 letters, digits, _ . -, not starting with . or -")
OWNER_RE = form(r"^\d+:\d+$", "numeric uid:gid such as 1000:1000")
PORT_RE = form(r"^\d{1,5}(/(tcp|udp|sctp))?$", "a port such as 8080, 8080/tcp or 53/udp")
LAYER_KINDS = ("files", "debian", "cuda", "python", "home", "services", "from", "run")
OBJECT_RE = form(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$",
                 "an object reference module:Class, e.g. my_renderers.hello:HelloRenderer")
USER_RE = form(r"^[a-z_][a-z0-9_-]{0,31}$", "a login name: up to 32 lowercase letters, digits, _ -, starting with a letter or _")


def split_command(value: Any) -> Any:
    """A command written as one string is split with shell quoting rules (no shell runs it)."""
    return shlex.split(value) if isinstance(value, str) else value


def to_port(value: Any) -> Any:
    """``8080`` and ``"8080"`` mean ``"8080/tcp"``, as in a Dockerfile's EXPOSE."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        return value + "/tcp"
    return value


def _image_path(field: str, value: Any, error: Any) -> None:
    """A path in the image: no ``..`` (it would climb out of the image root) and no NUL."""
    if not isinstance(value, str):
        return
    if "\0" in value:
        error(field, "must not contain a NUL character")
    elif ".." in value.split("/"):
        error(field, f"must not climb with '..' (got {value!r}): write the path it means")


MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown: the largest usable id is one less


def _owner_range(field: str, value: Any, error: Any) -> None:
    """A uid or gid past 32 bits wraps around in tar readers (4294967296 became root)."""
    if isinstance(value, str) and re.fullmatch(OWNER_RE, value):
        if any(int(part) > MAX_ID for part in value.split(":")):
            error(field, f"uid and gid must be at most {MAX_ID} (got {value})")


def _port_range(field: str, value: Any, error: Any) -> None:
    if isinstance(value, str) and re.fullmatch(PORT_RE, value) and not 1 <= int(value.split("/")[0]) <= 65535:
        error(field, f"a port is 1 to 65535 (got {value.split('/')[0]})")


def _real_time(field: str, value: Any, error: Any) -> None:
    """The pattern admits 2024-13-45T…; the calendar does not."""
    try:
        dt.datetime.strptime(value.split(".")[0].removesuffix("Z"), "%Y-%m-%dT%H:%M:%S")
    except (ValueError, AttributeError):
        error(field, f"must be a real UTC time such as 2026-01-31T12:00:00Z (got {value!r})")


def _command(text: str) -> dict[str, Any]:
    return {"type": "list", "coerce": split_command, "schema": {"type": "string"},
            "nullable": True, **doc(text)}


FILE_ENTRY = {
    "type": "dict",
    "exactly_one_of": ["src", "content", "symlink", "directory"],
    "schema": {
        "dest": {"type": "string", "required": True, "regex": ABSOLUTE, "check_with": _image_path,
                 **doc("Absolute path in the image. For `src` directories, the directory's "
                        "contents go below it.")},
        "src": {"type": "string", "empty": False,
                **doc("A file or directory on the host, relative to the YAML file that names it; it must "
                       "stay inside the project after `..` and symlinks are resolved (no absolute "
                       "paths; a preset may name files in its own folder). Symlinks below it are kept as "
                       "links (a relative target must not climb above the image root), hard links as "
                       "hard links, and file capabilities and `user.*` extended attributes as PAX records.")},
        "content": {"type": "string", **doc("The file's text, inline.")},
        "symlink": {"type": "string", "empty": False,
                    **doc("Make `dest` a symbolic link to this target. A relative target must not climb "
                           "above the image root from `dest`'s folder; an absolute one resolves inside "
                           "the image.")},
        "directory": {"type": "boolean", "allowed": [True], **doc("Make `dest` an empty directory.")},
        "mode": {"type": "string", "regex": MODE_RE,
                 **doc("Octal permission bits as a quoted string (`\"0644\"`); default 0644 for "
                        "files, 0755 for directories and for host files that are executable.")},
        "owner": {"type": "string", "regex": OWNER_RE, "check_with": _owner_range,
                  **doc("`uid:gid` for the entries this item adds; default `0:0`.", "0:0")},
        "exclude": {"type": "list", "schema": {"type": "string"}, "default": [],
                    **doc("Glob patterns to leave out: with a `/`, matched against the path below `src`; "
                           "without, against names at any depth (`__pycache__`).", [])},
    },
}

FILES_LAYER = {"type": "list", "minlength": 1, "schema": FILE_ENTRY,
               **doc("Files, directories and links placed into the image (kind `files`).")}

DEBIAN_LAYER = {
    "type": "dict",
    **doc("A root filesystem from Debian packages (kind `debian`), resolved from the machine's "
           "apt sources and pinned in the lock."),
    "schema": {
        "packages": {"type": "list", "required": True, "minlength": 1,
                     "schema": {"type": "string", "regex": form(r"^[a-z0-9][a-z0-9+.-]+$", "a Debian package name (lowercase letters, digits, + . -)")},
                     **doc("Package names; their dependencies are added by apt's resolver.")},
        "essential": {"type": "boolean", "default": True,
                      **doc("Also install every `Essential: yes` package (a working `sh`, "
                             "coreutils, …), as debootstrap's minbase does.", True)},
        "recommends": {"type": "boolean", "default": False,
                       **doc("Install recommended packages too.", False)},
        "suite": {"type": "string", "regex": form(r"^[a-z]+$", "a Debian suite codename such as bookworm or trixie"),
                  **doc("Debian suite (`bookworm`, `trixie`): the machine's apt sources with their "
                         "release's suites renamed to this one (same mirrors and keyrings). "
                         "Default: the suites the machine's sources name.")},
        "exclude": {"type": "list", "schema": {"type": "string"}, "default": [],
                    **doc("Glob patterns of image paths left out of the layer "
                           "(e.g. `/usr/share/doc/*`), like dpkg's path-exclude.", [])},
        "bytecode": {"type": "boolean", "default": True,
                     **doc("Compile the Python modules the packages install (the standard library "
                            "in `/usr/lib/python3.X`, `/usr/lib/python3/dist-packages`) to `.pyc` "
                            "files in the layer, as Debian's postinst scripts would (unchecked-hash, "
                            "the same bytes every build), so that a new container does not compile "
                            "the standard library on every start. Needs that `python3.X` on the "
                            "building machine; without one the layer ships without bytecode and the "
                            "build says so.", True)},
    },
}

CUDA_COMPONENTS = (
    # extras of NVIDIA's `cuda-toolkit` meta-package, which pins mutually compatible wheels
    "cudart", "nvrtc", "cublas", "cufft", "curand", "cusolver", "cusparse", "nvjitlink",
    "cupti", "nvtx", "cufile", "npp", "nvjpeg", "nvcc", "cccl", "nvfatbin", "nvml",
    # separate wheel families, versioned on their own
    "cudnn", "nccl", "cusparselt", "nvshmem",
)

MIN_LAYER_SIZE = {"type": "integer", "min": 0, "default": 16_000_000,
                  **doc("Wheels at least this big (bytes, as downloaded) get a layer of their own.",
                         16_000_000)}
SMALL_LAYER_WORDS = ("The wheels under `min_layer_size` share one layer, the top one, while together "
                     "they stay within this many bytes (as downloaded); taken smallest first, the "
                     "bigger ones that do not fit get layers of their own.")
SMALL_LAYER_SIZE = {"type": "integer", "min": 0, "default": 2_000_000,
                    **doc(SMALL_LAYER_WORDS + " So an everyday change to a small requirement "
                          "rebuilds and re-pushes a few MB, however big the image (its bytecode "
                          "comes on top: about as much again).", 2_000_000)}
CUDA_SMALL_LAYER_SIZE = {"type": "integer", "min": 0, "default": 16_000_000,
                         **doc(SMALL_LAYER_WORDS + " A CUDA release changes its components "
                               "together, so by default they all share it.", 16_000_000)}

CUDA_VERSION_WORDS = ("must be a CUDA version such as 12, 12.8 or 12.8.1 (12 or newer), "
                      "or `python` to follow the CUDA that the python layers' requirements pin")


def _cuda_version(field: str, value: Any, error: Any) -> None:
    """The allowed forms in words, never a regex: `12`, `12.8`, `12.8.1` (a prefix of a
    `cuda-toolkit` release), or the word `python`."""
    if value == CUDA_FOLLOW:
        return
    form = re.fullmatch(r"(\d+)(\.\d+){0,3}", value) if isinstance(value, str) else None
    if form is None or int(form.group(1)) < 12:
        error(field, f"{CUDA_VERSION_WORDS} (got \"{value}\")")


def _component_version(field: str, value: Any, error: Any) -> None:
    """A wheel version or a prefix of one (`12.8.4.1`, `9.10`), in words when wrong."""
    if not (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)*", value)):
        error(field, f"must be a wheel version such as 12.8.4.1, or a prefix such as 9.10 (got \"{value}\")")


def _version_text(value: Any) -> Any:
    """``version: 12`` (a YAML integer) means "12"; floats stay and are refused (12.10 would
    read as 12.1)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


CUDA_LAYER = {
    "type": "dict",
    **doc("CUDA libraries from NVIDIA's PyPI wheels (kind `cuda`), installed into the Python "
           "site directory (so frameworks find `nvidia.*`) with `/usr/local/cuda/lib64` links, an "
           "`ld.so.conf.d` entry and the env the NVIDIA container runtime reads. Each wheel of at "
           "least `min_layer_size` bytes becomes a layer of its own, `<layer>-<component>`; the "
           "rest, the links and `dream-cuda-env` (the driver finder) form `<layer>`."),
    "schema": {
        "version": {"type": "string", "required": True, "coerce": _version_text,
                    "check_with": _cuda_version,
                    **doc("CUDA version: `12`, `12.9` (the newest matching `cuda-toolkit` release), "
                           "`12.8.1` (that release), or `python`: the CUDA that the requirements of "
                           "the image's `python` layers above pin (torch, jax …), each component at "
                           "the framework's own version. Components nobody pins get the toolkit "
                           "release's pins.")},
        "components": {"type": "list", "required": True, "minlength": 1,
                       "schema": {"type": "string", "coerce": lambda v: "cudart" if v == "runtime" else v,
                                  "allowed": list(CUDA_COMPONENTS)},
                       **doc("Components: " + ", ".join(f"`{c}`" for c in CUDA_COMPONENTS)
                              + " (`runtime` means `cudart`). Their wheel dependencies come too.")},
        "versions": {"type": "dict", "keysrules": {"type": "string", "allowed": list(CUDA_COMPONENTS)},
                     "valuesrules": {"type": "string", "check_with": _component_version},
                     **doc("Per component, the wheel version to lock instead of the toolkit's or the "
                            "framework's: exact (`cublas: \"12.8.4.1\"`) or a prefix (`cudnn: \"9.10\"`, "
                            "the newest 9.10 release).")},
        "min_layer_size": MIN_LAYER_SIZE,
        "small_layer_size": CUDA_SMALL_LAYER_SIZE,
    },
}

PYTHON_LAYER = {
    "type": "dict",
    **doc("A Python environment from a lock of wheels (kind `python`), installed into the "
           "Debian interpreter's site directory without running anything in the image. Split "
           "rule: every distribution whose wheel is at least `min_layer_size` bytes gets its own "
           "layer, `<layer>-<name>`, ordered by name; the smaller ones share `<layer>`, the top "
           "one, up to `small_layer_size` bytes (the rest get their own layers too). Wheels "
           "that a `cuda` layer of the image provides are not installed again."),
    "schema": {
        "requirements": {"type": "list", "required": True, "minlength": 1,
                         "schema": {"type": "string", "empty": False},
                         **doc("Requirement specifiers (PEP 508), e.g. `numpy>=2`, `cupy-cuda12x`.")},
        "min_layer_size": MIN_LAYER_SIZE,
        "small_layer_size": SMALL_LAYER_SIZE,
    },
}

HOME_FILE = {
    "type": "dict",
    "exactly_one_of": ["src", "content"],
    "schema": {
        "path": {"type": "string", "required": True, "regex": RELATIVE, "check_with": _image_path,
                 **doc("Path relative to the home directory, e.g. `.bashrc`.")},
        "src": {"type": "string", "empty": False,
                **doc("A host file, relative to the YAML file that names it, inside the project (as "
                       "for `files[].src`).")},
        "content": {"type": "string", **doc("The file's text, inline.")},
        "mode": {"type": "string", "regex": MODE_RE, **doc("Octal permission bits; default 0644.")},
    },
}

HOME_LAYER = {
    "type": "dict",
    **doc("A user and its home (kind `home`): the account is added to the accounts of the "
           "image's Debian layers (passwd, group, shadow, gshadow), the home directory and "
           "dotfiles are owned by the user. Tools come from Debian packages: add them to the "
           "`debian` layer of the same name (see docs/gpu-images.md)."),
    "schema": {
        "user": {"type": "string", "required": True, "regex": USER_RE, **doc("Login name.")},
        "uid": {"type": "integer", "min": 1, "max": 2**31 - 1, "default": 1000,
                **doc("User id.", 1000)},
        "gid": {"type": "integer", "min": 1, "max": 2**31 - 1,
                **doc("Primary group id; a group named like the user is made. Default: the uid.")},
        "shell": {"type": "string", "regex": ABSOLUTE, "default": "/bin/bash",
                  **doc("Login shell.", "/bin/bash")},
        "home": {"type": "string", "regex": ABSOLUTE, **doc("Home directory. Default: `/home/<user>`.")},
        "groups": {"type": "list", "default": [], "schema": {"type": "string", "regex": USER_RE},
                   **doc("Supplementary groups; each must exist in the base system "
                          "(e.g. `sudo`, `video`).", [])},
        "sudo": {"type": "boolean", "default": False,
                 **doc("Let the user run any command with sudo without a password "
                        "(`/etc/sudoers.d/<user>`; needs the `sudo` package).", False)},
        "env": {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": ENV_NAME_RE},
                "valuesrules": {"type": "string", "coerce": to_text},
                **doc("Environment of the user's shells, written to `~/.config/dream/env.sh`, "
                       "which `.profile` and `.bashrc` read.", {})},
        "files": {"type": "list", "default": [], "schema": HOME_FILE,
                  **doc("Dotfiles, owned by the user. Later entries replace earlier ones at the "
                         "same path, so a recipe can override a module's `.bashrc`.", [])},
    },
}

PYTHON = {
    "type": "dict",
    "default": {},
    **doc("The image's Python interpreter, for which `python` and `cuda` layers resolve and "
           "install wheels."),
    "schema": {
        "version": {"type": "string", "regex": form(r"^3\.\d+$", "a Python version such as 3.11 or 3.13"), "default": "3.11",
                    **doc("Interpreter version; a Debian layer must install `python<version>`.", "3.11")},
        "platform": {"type": "string", "regex": form(r"^manylinux_2_\d+_(x86_64|aarch64)$", "a manylinux tag such as manylinux_2_36_x86_64 or manylinux_2_36_aarch64"),
                     **doc("Wheel platform tag of the image (glibc 2.36 is Debian 12, 2.41 Debian "
                            "13); its machine must be `image.architecture`'s.",
                            "manylinux_2_36_<machine of image.architecture>")},
        "prefix": {"type": "string", "regex": ABSOLUTE, "default": "/usr/local",
                   **doc("Install prefix: packages go to `<prefix>/lib/python<version>/dist-packages` "
                          "(on Debian's `sys.path`), console scripts to `<prefix>/bin`.", "/usr/local")},
        "bytecode": {"type": "boolean", "default": True,
                     **doc("Compile the wheels' modules to `.pyc` files at build time, in the layer "
                            "of their sources (unchecked-hash, the same bytes every build), so first "
                            "imports in a new container do not compile them. Needs a "
                            "`python<version>` on the building machine; without one the layers "
                            "ship without bytecode and the build says so.", "true")},
    },
}

RUN_LAYER = {
    "type": "dict",
    **doc("A command run at build time in a sandbox over the image layers below (kind `run`), "
           "like a Dockerfile's `RUN`: what it writes under `outputs` becomes the layer, every "
           "other write is dropped (and named). The sandbox has no network, `/tmp` is a tmpfs, "
           "the layers below are read-only; it needs root. The one kind that depends on the "
           "layers below: a change there runs the step again. `doit check:<image>` runs the "
           "step again and names the files whose bytes differ (see docs/recipes.md)."),
    "schema": {
        "command": {"type": "list", "coerce": split_command, "required": True, "minlength": 1,
                    "schema": {"type": "string"},
                    **doc("The command (argv; a string is split with shell quoting rules, and no "
                           "shell runs it: write `[sh, -c, '...']` for one).")},
        "inputs": {"type": "list", "default": [], "schema": FILE_ENTRY,
                   **doc("Project files the step may read, as `files` entries (`src`, `dest`, "
                          "`exclude`, …): staged read-only at `dest` over the layers below and "
                          "hashed into the key; not part of the layer unless the step writes "
                          "them under an output.", [])},
        "outputs": {"type": "list", "required": True, "minlength": 1,
                    "schema": {"type": "string", "regex": ABSOLUTE, "check_with": _image_path},
                    **doc("Absolute paths in the image: what the step writes at or below them "
                           "becomes the layer (`/` takes every write, as `RUN` does). Each must "
                           "exist when the step ends.")},
        "user": {"type": "string", "empty": False,
                 **doc("`user`, `uid` or `user:group` the step runs as, looked up in the layers "
                        "below. Default: `image.user`, else root.")},
        "workdir": {"type": "string", "regex": ABSOLUTE, "default": "/",
                    **doc("Working directory of the step; it must exist.", "/")},
        "env": {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": ENV_NAME_RE},
                "valuesrules": {"type": "string", "coerce": to_text},
                **doc("Variables over the step's environment: `PATH`, the image's environment "
                       "so far, then `SOURCE_DATE_EPOCH`, `HOME` (the user's), `TZ=UTC`, "
                       "`LC_ALL=C.UTF-8` (and `PYTHONDONTWRITEBYTECODE=1` under the image's).", {})},
        "timeout": {"type": "integer", "min": 1, "default": 3600,
                    **doc("Seconds the step may run before the sandbox is killed.", 3600)},
    },
}

LAYER = {
    "type": "dict",
    "exactly_one_of": list(LAYER_KINDS),
    "schema": {
        "name": {"type": "string", "required": True, "regex": LAYER_NAME_RE,
                 **doc("The layer's name, unique in the image; the task is `layer:<image>/<name>`.")},
        "comment": {"type": "string", **doc("Shown as the layer's history entry.")},
        "files": FILES_LAYER,
        "debian": DEBIAN_LAYER,
        "cuda": CUDA_LAYER,
        "python": PYTHON_LAYER,
        "home": HOME_LAYER,
        "services": SERVICES_LAYER,
        "run": RUN_LAYER,
        "from": {"type": "string", "regex": REFERENCE_PATTERN,
                 **doc("An image in a registry (kind `from`), `host/repository:tag` or "
                        "`…@sha256:…`: its layers are reused as they are, its config (Env, "
                        "Entrypoint, Cmd, User, WorkingDir, ports, labels) is inherited and the "
                        "recipe's `image` fields override it. `doit lock` pins it by digest. One "
                        "layer becomes `<name>`, several `<name>-1`, `<name>-2` …")},
    },
}

IMAGE = {
    "type": "dict",
    "default": {},
    **doc("The image's name and configuration (the OCI image config)."),
    "schema": {
        "name": {"type": "string", "regex": NAME_RE,
                 **doc("Image name; the store tags it so, and `load` names it `<name>:<tag>`. "
                        "Default: the recipe's file name without `.yaml`.")},
        "tags": {"type": "list", "minlength": 1, "schema": {"type": "string", "regex": TAG_RE},
                 "default": ["latest"], **doc("Tags given to the image when loaded or pushed.", ["latest"])},
        "env": {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": ENV_NAME_RE},
                "valuesrules": {"type": "string", "coerce": to_text},
                **doc("Environment variables of the image's processes.", {})},
        "labels": {"type": "dict", "default": {}, "keysrules": {"type": "string"},
                   "valuesrules": {"type": "string", "coerce": to_text},
                   **doc("Config labels, e.g. `org.opencontainers.image.source`. "
                          "`org.opencontainers.image.created` is added from `created`.", {})},
        "ports": {"type": "list", "default": [],
                  "schema": {"type": "string", "coerce": to_port, "regex": PORT_RE, "check_with": _port_range},
                  **doc("Exposed ports, `8080` or `8080/udp`.", [])},
        "user": {"type": "string", "empty": False, **doc("`user`, `uid` or `uid:gid` the processes run as.")},
        "workdir": {"type": "string", "regex": ABSOLUTE, **doc("Working directory (absolute).")},
        "entrypoint": _command("Entrypoint argv; a string is split with shell quoting rules."),
        "cmd": _command("Default arguments (argv); a string is split with shell quoting rules."),
        "stop_signal": {"type": "string", "regex": SIGNAL_RE, **doc("Signal that stops the container, e.g. `SIGINT`.")},
        "created": {"type": "string", "check_with": _real_time,
                    "regex": form(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", "an RFC 3339 UTC time such as 2026-01-31T12:00:00Z"),
                    **doc("Creation time written into the config (RFC 3339, UTC). Default: "
                           "`SOURCE_DATE_EPOCH`, or 1970-01-01T00:00:00Z, so builds are reproducible.")},
        "architecture": {"type": "string", "allowed": ["amd64", "arm64"], "default": "amd64",
                         **doc("CPU architecture of the image.", "amd64")},
        "push": {"type": "list", "default": [], "schema": {"type": "string", "regex": REFERENCE_PATTERN},
                 **doc("Repositories `doit push:<image>` pushes to (`host/repository`), each "
                        "with every tag in `tags`; `--to` on the command line replaces them.", [])},
        "cache": {"type": "string", "regex": REFERENCE_PATTERN, "nullable": True,
                  **doc("A repository used as the remote layer cache (`host/repository`): "
                         "layers are looked up there before they are built and published there "
                         "after. `DREAM_LAYER_CACHE` overrides it (`DREAM_LAYER_CACHE=off` turns it off).")},
        "compression": {"type": "string", "allowed": ["gzip", "zstd"], "default": "gzip",
                        **doc("Layer compression: gzip (ISA-L, level 1, written as independent "
                               "1 MiB members; a wheel's files of 64 KiB or more keep the "
                               "deflate stream the wheel holds them in, one member each: still "
                               "one valid gzip file) reads everywhere; zstd (level 3) is smaller "
                               "and needs Docker ≥ 23.", "gzip")},
    },
}


def _plugins(what: str, task: str, group: str) -> dict[str, Any]:
    return {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": SERVICE_NAME_RE},
            "valuesrules": {"type": "string", "regex": OBJECT_RE},
            **doc(f"{what} of this project by name, each a `module:Class` (written as an entry "
                  f"point of the group `{group}` names one); each gets a `{task}:<name>` task "
                  "like the built-in ones (docs/renderers.md).", {})}


RECIPE = {
    "imports": {"type": "list", "default": [], "schema": {"type": "string", "empty": False},
                **doc("Modules merged into this file: a name (`sshd` → the project's "
                       "`layers/sshd.yaml`, else dream's `sshd` preset) or a path relative to "
                       "this file that stays inside the project (no absolute paths, no `..` or "
                       "symlink out of it).", [])},
    "image": IMAGE,
    "python": PYTHON,
    "layers": {"type": "list", "default": [], "schema": LAYER,
               **doc("The image's layers, bottom first. Imported layers come before the "
                      "importing file's. A recipe without layers builds no image (it may still "
                      "hold deployments).", [])},
    "services": SERVICES,
    "deployments": DEPLOYMENTS,
    "renderers": _plugins("Renderers", "render", "dream.renderers"),
    "managers": _plugins("Managers", "run", "dream.managers"),
    "registries": {
        "type": "dict", "default": {}, "keysrules": {"type": "string", "regex": form(r"^[^\s/]+$", "a registry host such as 127.0.0.1:5000 (no spaces or /)")},
        "valuesrules": {"type": "dict", "schema": {
            "plain_http": {"type": "boolean", **doc("Speak plain http to this registry (only "
                                                      "loopback registries may do so unasked).")},
            "ca_file": {"type": "string", "empty": False,
                        **doc("A PEM file of CA certificates to trust for this registry, relative "
                               "to the YAML file that names it (a setting of this host, never copied into an "
                               "image, so it may lie outside the project or be absolute).")},
        }},
        **doc("Per registry host (`name:port`): how to reach it. Credentials never go here: "
               "they come from the Docker config or DREAM_REGISTRY_USERNAME/PASSWORD.", {}),
    },
}


@functools.lru_cache(maxsize=1)
def validator() -> RecipeValidator:
    """The validator for the recipe schema (unknown fields are errors).

    Built once per process: cerberus checks the schema itself on construction, which costs
    more than validating a recipe. Cerberus itself is imported here, not with the schema: the
    builders import this module for its constants, and a recipe kept by dream/recipe/cache.py
    is never validated again.
    """
    from dream.recipe.validator import RecipeValidator
    return RecipeValidator(RECIPE, allow_unknown=False)
