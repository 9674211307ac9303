"""The supervisor's secrets (dream/supervisor/secrets.py) with the real `age` binary."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest

from dream.supervisor import secrets
from dream.supervisor.secrets import Secret, SecretError, give
from tests.conftest import require

PLAINTEXT = b"s3cr3t-value\n"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    """(identity, recipient) of a fresh age key."""
    require("age")
    identity = subprocess.run([require("age-keygen")], capture_output=True, text=True, check=True).stdout
    recipient = next(line.split(": ")[1] for line in identity.splitlines() if line.startswith("# public key: "))
    key = next(line for line in identity.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return key, recipient


def _encrypted(recipient: str, data: bytes = PLAINTEXT) -> bytes:
    return subprocess.run(["age", "-r", recipient], input=data, capture_output=True, check=True).stdout


def _secret(ciphertext: bytes, **extra: object) -> Secret:
    return Secret.from_plan({"name": "db", "ciphertext": base64.b64encode(ciphertext).decode(), **extra})


def test_a_file_secret_is_written_0400_and_an_env_secret_comes_back(keys: tuple[str, str], tmp_path: Path) -> None:
    key, recipient = keys
    env = give([_secret(_encrypted(recipient)), Secret("token", _encrypted(recipient, b"t0ken\n"), None, "TOKEN", 0o400)],
               {"DREAM_AGE_IDENTITY": key}, tmp_path, (os.getuid(), os.getgid()))
    assert env == {"TOKEN": "t0ken"}  # one trailing newline dropped, as `echo x | age` writes it
    written = tmp_path / "db"
    assert written.read_bytes() == PLAINTEXT
    assert stat.S_IMODE(written.stat().st_mode) == 0o400
    assert [p.name for p in tmp_path.iterdir()] == ["db"]  # no temporary file left


def test_the_identity_may_be_a_file_named_by_the_environment_or_the_mounted_one(
        keys: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, recipient = keys
    identity = tmp_path / "identity.txt"
    identity.write_text(key + "\n")
    target = tmp_path / "custom" / "place"
    give([_secret(_encrypted(recipient), path=str(target), mode=0o440)],
         {"DREAM_AGE_IDENTITY_FILE": str(identity)}, tmp_path, None)
    assert target.read_bytes() == PLAINTEXT and stat.S_IMODE(target.stat().st_mode) == 0o440
    monkeypatch.setattr(secrets, "MOUNTED_IDENTITY", str(identity))
    give([_secret(_encrypted(recipient))], {}, tmp_path, None)
    assert (tmp_path / "db").read_bytes() == PLAINTEXT


def test_a_wrong_key_or_none_is_one_line_naming_the_secret(keys: tuple[str, str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, recipient = keys
    other = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    other_key = next(line for line in other.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    with pytest.raises(SecretError) as wrong:
        give([_secret(_encrypted(recipient))], {"DREAM_AGE_IDENTITY": other_key}, tmp_path, None)
    assert str(wrong.value) == "secret db: cannot decrypt it: no identity matched any of the recipients"
    monkeypatch.setattr(secrets, "MOUNTED_IDENTITY", str(tmp_path / "absent"))
    with pytest.raises(SecretError, match="^secret db: no age identity: set DREAM_AGE_IDENTITY"):
        give([_secret(_encrypted(recipient))], {}, tmp_path, None)
    with pytest.raises(SecretError, match="^secret db: cannot read the age identity DREAM_AGE_IDENTITY_FILE="):
        give([_secret(_encrypted(recipient))], {"DREAM_AGE_IDENTITY_FILE": str(tmp_path / "nope")}, tmp_path, None)
    assert not (tmp_path / "db").exists()
    ciphertext = _encrypted(recipient)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SecretError, match="the age binary is not installed here"):
        give([_secret(ciphertext)], {"DREAM_AGE_IDENTITY": other_key}, tmp_path, None)


def test_the_host_folder_is_private_and_outside_the_project(tmp_path: Path) -> None:
    folder = secrets.host_directory("demo")
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.name.startswith("dream-secrets-demo-") and not folder.is_relative_to(Path.cwd())
    finally:
        secrets.remove(folder)
    assert not folder.exists()
