"""Services' secrets (issue 19) for real: encrypted with age in the project, decrypted at start
by dream's supervisor on the host (`doit run:procfile`) and as PID 1 in an image (`docker run`),
mapped by the Compose, Kubernetes and systemd renderers; the plaintext is nowhere dream writes.

The reader service prints the sha256 of what it was given, never the secret; a second service's
secret is for another key, so it cannot start while the reader does.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, Project, make_project, require, require_docker

pytestmark = pytest.mark.integration

PASSWORD = b"correct-horse-battery-staple-7351\n"
TOKEN = "tok-5f1c9a-never-logged"
RECIPE = """\
image: {name: vault}
layers:
  - name: debian
    debian:
      packages: [python3, age]
      exclude: [/usr/share/doc/*, /usr/share/man/*, /usr/share/locale/*, /usr/share/info/*]
  - name: services
    services: {}
deployments:
  vault:
    services: [reader, other]
    kubernetes: {images: local}
services:
  reader:
    command: exec python3 -u "$DREAM_CONFIG_DIR/reader.py"
    config_files: [{path: reader.py, src: reader.py}]
    oneshot: true
    secrets:
      - {name: db_password, src: secrets/db.age}
      - {name: api_token, src: secrets/token.age, env: API_TOKEN}
  other:
    command: [sleep, "1"]
    oneshot: true
    allowed_to_exit: true
    secrets:
      - {name: foreign, src: secrets/foreign.age}
"""


def _key() -> tuple[str, str]:
    identity = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    key = next(line for line in identity.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    recipient = next(line.split(": ")[1] for line in identity.splitlines() if line.startswith("# public key: "))
    return key, recipient


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, str]:
    require("age")
    require("apt-get")
    project = make_project(tmp_path_factory.mktemp("secrets") / "p", {"vault.yaml": RECIPE}, with_demo=False)
    recipes = project.root / "recipes"
    shutil.copy(REPO / "tests" / "data" / "secrets" / "reader.py", recipes / "reader.py")
    (recipes / "secrets").mkdir()
    key, recipient = _key()
    _, stranger = _key()
    for name, data, to in (("db", PASSWORD, recipient), ("token", TOKEN.encode() + b"\n", recipient),
                           ("foreign", b"not for us\n", stranger)):
        subprocess.run(["age", "-r", to, "-o", str(recipes / "secrets" / f"{name}.age")], input=data, check=True)
    project.doit("lock:vault")
    project.doit("build:vault")
    return project, key


def _expected(folder: str) -> list[str]:
    return ["file", hashlib.sha256(PASSWORD).hexdigest(), "0o400", "0",
            "env", hashlib.sha256(TOKEN.encode()).hexdigest(), "in", folder]


def _reader_line(output: str) -> list[str]:
    line = next(line for line in output.splitlines() if " file " in f" {line} " and " env " in line)
    return line.split("|", 1)[-1].split()[-8:]


def test_the_host_supervisor_decrypts_at_start_and_a_wrong_key_stops_only_its_service(vault: tuple[Project, str]) -> None:
    project, key = vault
    run = project.doit("run:procfile", check=False, env={"DREAM_AGE_IDENTITY": key})
    out = run.stdout + run.stderr
    words = _reader_line(out)
    assert words[:7] == _expected("")[:7]
    folder = Path(words[7])
    assert folder.parent == Path("/dev/shm") and not folder.exists()  # in memory, and gone after the run
    assert ("other was not started (secret foreign: cannot decrypt it: no identity matched any of the "
            "recipients)") in out
    assert "reader completed" in out and "Traceback" not in out


def test_no_identity_is_one_line_naming_the_secret_and_the_service(vault: tuple[Project, str]) -> None:
    project, _ = vault
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAM_AGE")}
    run = subprocess.run([os.sys.executable, "-m", "doit", "run:procfile"], cwd=project.root, text=True,
                         capture_output=True, env={**env, "DREAM_STORE": str(project.store)})
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out
    assert "reader was not started (secret db_password: no age identity: set DREAM_AGE_IDENTITY" in out


def test_pid1_in_the_image_decrypts_with_the_operators_key(vault: tuple[Project, str]) -> None:
    require_docker()
    project, key = vault
    project.doit("load:vault")
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", f"DREAM_AGE_IDENTITY={key}", "vault"],
                         capture_output=True, text=True, timeout=120)
    assert _reader_line(run.stdout + run.stderr) == _expected("/run/secrets")


def test_the_renderers_map_secrets_to_their_targets_own_mechanisms(vault: tuple[Project, str]) -> None:
    project, key = vault
    project.doit("render:images")
    project.doit("render:compose")
    compose = yaml.safe_load((project.root / "build" / "vault" / "compose" / "compose.yaml").read_text())
    assert compose["secrets"] == {"dream-age-identity": {"file": "${DREAM_AGE_IDENTITY_FILE:-/dev/null}"}}
    assert compose["services"]["reader"]["secrets"] == [{"source": "dream-age-identity", "target": "dream-age-identity"}]
    assert compose["services"]["reader"]["environment"] == ["DREAM_AGE_IDENTITY"]

    project.doit("render:kubernetes")
    documents = list(yaml.safe_load_all((project.root / "build" / "vault" / "kubernetes" / "vault.yaml").read_text()))
    pod = next(d for d in documents if d["kind"] == "Job" and d["metadata"]["name"].endswith("reader"))["spec"]["template"]["spec"]
    assert {"name": "dream-age-identity", "secret": {"secretName": "dream-age-identity", "optional": True,
                                                     "defaultMode": 0o400}} in pod["volumes"]
    container = pod["containers"][0]
    assert {"name": "DREAM_AGE_IDENTITY_FILE", "value": "/run/dream/age-identity/identity"} in container["env"]
    assert {"name": "dream-age-identity", "mountPath": "/run/dream/age-identity", "readOnly": True} in container["volumeMounts"]
    project.doit("render:systemd")
    unit = (project.root / "build" / "vault" / "systemd" / "vault-reader.service").read_text()
    assert "LoadCredential=dream-age-identity:/etc/dream/age-identity" in unit
    assert "RuntimeDirectory=dream-vault-reader" in unit
    assert "ExecStartPre=/usr/bin/age --decrypt -i %d/dream-age-identity -o %t/dream-vault-reader/db_password" in unit
    assert "secrets api_token are not given" in unit
    armored = project.root / "build" / "vault" / "systemd" / "config" / ".secrets" / "reader" / "db_password.age"
    identity = project.root / "key.txt"
    identity.write_text(key + "\n")
    decrypted = subprocess.run(["age", "--decrypt", "-i", str(identity), str(armored)], capture_output=True, check=True)
    assert decrypted.stdout == PASSWORD  # the rendered ciphertext is the project's, as age's armor
    identity.unlink()


def test_compose_runs_it_with_the_identity_as_a_compose_secret(vault: tuple[Project, str], tmp_path: Path) -> None:
    require_docker()
    require("docker-compose")
    project, key = vault
    identity = tmp_path / "identity.txt"  # the operator's file, outside the project
    identity.write_text(key + "\n")
    run = project.doit("run:compose", check=False, env={"DREAM_AGE_IDENTITY_FILE": str(identity)})
    out = run.stdout + run.stderr
    assert _reader_line(out) == _expected("/run/secrets")
    assert "other was not started (secret foreign: cannot decrypt it: no identity matched" in out


def _everything_dream_wrote(project: Project) -> list[tuple[str, bytes]]:
    """Every file under the store, build/ and .dream/, layer blobs decompressed."""
    found = []
    for top in (project.store, project.root / "build", project.root / ".dream"):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                found.append((str(path), data))
    return found


def test_no_plaintext_in_the_store_build_or_dream_state(vault: tuple[Project, str]) -> None:
    project, _ = vault
    files = _everything_dream_wrote(project)
    assert len(files) > 20
    assert any(b"AGE ENCRYPTED FILE" in data for _, data in files)  # systemd's armored ciphertext
    for needle in (PASSWORD.strip(), TOKEN.encode()):
        leaks = [path for path, data in files if needle in data]
        assert leaks == [], leaks
    plans = [json.loads(data) for path, data in files if path.endswith("plan.json")]
    assert plans and all(plan["services"][0]["secrets"][0]["ciphertext"] for plan in plans)
