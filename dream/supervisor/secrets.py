"""Runtime secrets: age-encrypted in the plan, decrypted by the `age` binary at each start.

A service's secrets travel as age ciphertext (the project's ``secrets/*.age`` files, read when
the recipe is loaded), so a layer, an image config, a rendered file, a plan, a log or doit's
database only ever holds ciphertext. The plaintext exists in two places only: the memory of
this process while it starts the service, and what the service is given — a file (default
``<secrets dir>/<name>``, mode 0400, owned by the service's user) or a variable of its
environment.

The identity is the operator's, found at start, never at build time, in this order:

1. ``DREAM_AGE_IDENTITY``: the key itself (``AGE-SECRET-KEY-1…``), e.g. ``docker run -e``;
2. ``DREAM_AGE_IDENTITY_FILE``: a file holding it;
3. ``/run/secrets/dream-age-identity``: a mounted file (Compose's ``secrets:`` and the
   Kubernetes renderer's Secret volume put it there).

The key reaches ``age`` through a pipe (``-i /dev/fd/N``), never a file of ours. Decryption
uses the ``age`` binary (Debian's ``age`` package, in the image or on the host): this package
imports only the standard library, and a maintained tool does the cryptography.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

IDENTITY_ENV = "DREAM_AGE_IDENTITY"
IDENTITY_FILE_ENV = "DREAM_AGE_IDENTITY_FILE"
IMAGE_SECRETS_DIR = "/run/secrets"
IDENTITY_SECRET = "dream-age-identity"  # the name Compose and Kubernetes mount the identity under
MOUNTED_IDENTITY = f"{IMAGE_SECRETS_DIR}/{IDENTITY_SECRET}"
SECRETS_DIR_ENV = "DREAM_SECRETS_DIR"
DECRYPT_TIMEOUT = 60.0


class SecretError(Exception):
    """A secret that cannot be given to its service; one line, naming the secret."""


@dataclass(frozen=True)
class Secret:
    name: str
    ciphertext: bytes
    path: str | None
    env: str | None
    mode: int

    @classmethod
    def from_plan(cls, data: Mapping[str, Any]) -> "Secret":
        return cls(data["name"], base64.b64decode(data["ciphertext"]), data.get("path"), data.get("env"),
                   int(data.get("mode", 0o400)))


def identity(environ: Mapping[str, str]) -> bytes:
    """The operator's age identity, from the first place that has one (see the module doc)."""
    key = environ.get(IDENTITY_ENV, "").strip()
    if key:
        return key.encode() + b"\n"
    path = environ.get(IDENTITY_FILE_ENV, "").strip()
    if path:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise SecretError(f"cannot read the age identity {IDENTITY_FILE_ENV}={path}: {exc.strerror}") from None
    try:
        mounted = Path(MOUNTED_IDENTITY).read_bytes()
    except FileNotFoundError:
        mounted = b""
    except OSError as exc:
        raise SecretError(f"cannot read the age identity {MOUNTED_IDENTITY}: {exc.strerror}") from None
    if not mounted.strip():  # absent, or the empty stand-in a renderer mounts when none is given
        raise SecretError(f"no age identity: set {IDENTITY_ENV} (the key) or {IDENTITY_FILE_ENV} (a file "
                          f"holding it), or mount one at {MOUNTED_IDENTITY}")
    return mounted


def decrypt(ciphertext: bytes, key: bytes) -> bytes:
    """The plaintext of ``ciphertext`` under the identity ``key``, by ``age --decrypt``."""
    age = shutil.which("age")
    if age is None:
        raise SecretError("the age binary is not installed here (Debian's `age` package)")
    read, write = os.pipe()
    try:
        os.write(write, key)  # a few hundred bytes: the pipe holds them
        os.close(write)
        write = -1
        run = subprocess.run([age, "--decrypt", "-i", f"/dev/fd/{read}"], input=ciphertext,
                             capture_output=True, pass_fds=(read,), timeout=DECRYPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SecretError(f"age did not finish within {DECRYPT_TIMEOUT:.0f} s") from None
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    if run.returncode != 0:
        lines = run.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {run.returncode}"]
        reason = next((line for line in lines if line.startswith("age: error:")), lines[0])
        raise SecretError(f"cannot decrypt it: {reason.removeprefix('age: error: ')}")
    return run.stdout


def give(secrets: list[Secret], environ: Mapping[str, str], directory: Path,
         owner: tuple[int, int] | None) -> dict[str, str]:
    """Decrypt ``secrets`` for one start of a service: files are written (atomically, mode as
    asked, owned by ``owner`` when this process may chown), variables are returned. The first
    secret that fails stops it: ``SecretError`` names that secret."""
    if not secrets:
        return {}
    env: dict[str, str] = {}
    try:
        key = identity(environ)
    except SecretError as exc:
        raise SecretError(f"secret {secrets[0].name}: {exc}") from None
    for secret in secrets:
        try:
            plaintext = decrypt(secret.ciphertext, key)
            if secret.env:
                text = plaintext.decode("utf-8", "surrogateescape").removesuffix("\n")
                if "\0" in text:
                    raise SecretError("it holds a NUL byte, which no environment variable can")
                env[secret.env] = text
            else:
                _write(Path(secret.path) if secret.path else directory / secret.name, plaintext,
                       secret.mode, owner)
        except SecretError as exc:
            raise SecretError(f"secret {secret.name}: {exc}") from None
        except OSError as exc:
            raise SecretError(f"secret {secret.name}: cannot write it: {exc.strerror}: {exc.filename}") from None
    return env


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if owner is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), *owner)
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def host_directory(deployment: str) -> Path:
    """A private folder for a host run's file secrets, in memory where the machine has
    ``/dev/shm``: never under the project (``build/``, ``.dream/``). Removed by `remove`."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix=f"dream-secrets-{deployment}-", dir=base))


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
