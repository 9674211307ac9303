"""The Compose renderer (dream.renderers.compose) on plans built from recipe text: every mapping
of the model, the header that lists what Compose cannot say, one-line errors, and every rendered
file checked by the compose-spec JSON schema (vendored, tests/data/README.md) and by the real
``docker-compose config`` (Debian's 1.29; no daemon needed)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dream.errors import DreamError
from dream.recipe.load import load_recipe
from dream.recipe.model import Deployment
from dream.recipe.services_schema import DEPLOYMENT, SERVICE
from dream.renderers import RENDERERS
from dream.renderers.base import File, Target
from dream.renderers.compose import ComposeRenderer, duration
from dream.services.plan import build_plan

SCHEMA = Path(__file__).parent.parent / "data" / "compose-spec.json"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "renderers.md"
PROBE = ["python3", "-m", "dream_supervisor", "probe"]

SHOP = """\
services:
  db:
    command: [redis-server, --port, "6379"]
    ports: [6379]
    volumes: [var/lib/db]
    readiness: {exec: [redis-cli, ping], period: 200ms, timeout: 1.5, initial_delay: 90,
                failure_threshold: 5, success_threshold: 2}
  migrate:
    command: ./migrate.sh
    oneshot: true
    restart: on-failure
    env_files: [conf/base.env]
    depends_on: {db: healthy}
  app:
    command: [python3, -m, app]
    ports: [8080, 8081]
    replicas: 2
    gpus: 1
    restart: on-failure
    max_restarts: 3
    stop_grace_period: 500ms
    env_files: [conf/base.env, conf/app.env]
    volumes: [data, {path: cache, persistent: false}]
    readiness: {http: {path: /health}}
    depends_on: {db: healthy, migrate: completed_successfully}
  worker:
    command: worker
    gpus: all
    restart: always
    volumes: [{path: cache/, persistent: false}]
    depends_on: [app]
    log_file: logs/worker.log
deployments:
  shop: {default: true}
  lan:
    compose: {network: bridge, publish_address: 0.0.0.0}
  local:
    services: [db]
    compose: {network: bridge}
  v6:
    services: [db]
    compose: {network: bridge, publish_address: "::1"}
"""


def _project(root: Path, text: str = SHOP) -> dict[str, Deployment]:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(exist_ok=True)
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "base.env").write_text("A=1\n")
    (root / "conf" / "app.env").write_text("B=2\n")
    path = root / "recipes" / "shop.yaml"
    path.write_text(text)
    return load_recipe(path, root).deployments


def _target(root: Path, deployment: Deployment, **changes: Any) -> Target:
    settings: dict[str, Any] = {
        "images": {name: f"{deployment.name}-{name}:latest" for name in deployment.services},
        "options": deployment.options["compose"], **changes}
    return Target(root, root / "build" / deployment.name / "compose", **settings)


def _render(root: Path, deployment: Deployment, **changes: Any) -> File:
    files = ComposeRenderer().render(build_plan(deployment), _target(root, deployment, **changes))
    assert [f.path for f in files] == ["compose.yaml"]
    return files[0]


def _compose_config(root: Path, rendered: File, quiet: bool = True) -> str:
    """The real docker-compose's verdict: the file written where the task writes it."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is missing: apt-get install docker-compose (tools/test.sh does)"
    path = root / "out" / rendered.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered.content)
    done = subprocess.run([docker_compose, "-f", str(path), "config", *(["-q"] if quiet else [])],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _schema_errors(document: Any) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    return [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(document)]


def _labels(deployment: str, service: str) -> dict[str, str]:
    return {"dev.dream.deployment": deployment, "dev.dream.service": service}


def test_host_network_renders_every_mapping(tmp_path: Path) -> None:
    rendered = _render(tmp_path, _project(tmp_path)["shop"])
    gpu = {"driver": "nvidia", "capabilities": ["gpu"]}
    assert yaml.safe_load(rendered.content) == {
        "services": {
            "db": {
                "image": "shop-db:latest",
                "network_mode": "host",
                "volumes": ["vol-var-lib-db:/var/lib/db"],
                "healthcheck": {"test": ["CMD", *PROBE, "/etc/dream/services/shop-db.json"],
                                "interval": "200ms", "timeout": "1s500ms", "start_period": "1m30s",
                                "retries": 5},
                "restart": "no",
                "stop_signal": "SIGTERM",
                "stop_grace_period": "12s",
                "labels": _labels("shop", "db"),
            },
            "migrate": {
                "image": "shop-migrate:latest",
                "network_mode": "host",
                "env_file": [str(tmp_path / "conf" / "base.env")],
                "depends_on": {"db": {"condition": "service_healthy"}},
                "restart": "no",                       # a oneshot: the engine never restarts it
                "stop_signal": "SIGTERM",
                "stop_grace_period": "12s",
                "labels": _labels("shop", "migrate"),
            },
            "app": {
                "image": "shop-app:latest",
                "network_mode": "host",                # no ports: the host's own
                "env_file": [str(tmp_path / "conf" / "base.env"), str(tmp_path / "conf" / "app.env")],
                "volumes": ["vol-data:/data", "vol-cache:/cache"],
                "depends_on": {"db": {"condition": "service_healthy"},
                               "migrate": {"condition": "service_completed_successfully"}},
                "healthcheck": {"test": ["CMD", *PROBE, "/etc/dream/services/shop-app.json"],
                                "interval": "1s", "timeout": "1s", "start_period": "0s", "retries": 30},
                "restart": "on-failure:3",
                "stop_signal": "SIGTERM",
                "stop_grace_period": "2s500ms",        # 500ms grace + the supervisor's 2 s
                "deploy": {"resources": {"reservations": {"devices": [{**gpu, "count": 2}]}}},  # 1 × 2 replicas
                "labels": _labels("shop", "app"),
            },
            "worker": {
                "image": "shop-worker:latest",
                "network_mode": "host",
                "volumes": ["vol-cache:/cache"],       # `cache/` is the same volume as app's `cache`
                "depends_on": {"app": {"condition": "service_started"}},
                "restart": "always",
                "stop_signal": "SIGTERM",
                "stop_grace_period": "12s",
                "deploy": {"resources": {"reservations": {"devices": [{**gpu, "count": "all"}]}}},
                "labels": _labels("shop", "worker"),
            },
        },
        "volumes": {"vol-var-lib-db": {}, "vol-data": {}, "vol-cache": {}},
    }


def test_bridge_network_publishes_declared_ports(tmp_path: Path) -> None:
    deployments = _project(tmp_path)
    lan = yaml.safe_load(_render(tmp_path, deployments["lan"]).content)["services"]
    assert {name: (s.get("networks"), s.get("ports"), "network_mode" in s) for name, s in lan.items()} == {
        "db": (["default"], ["0.0.0.0:6379:6379"], False),
        "migrate": (["default"], None, False),
        "app": (["default"], ["0.0.0.0:8080:8080", "0.0.0.0:8081:8081"], False),
        "worker": (["default"], None, False),
    }
    local = yaml.safe_load(_render(tmp_path, deployments["local"]).content)["services"]["db"]
    assert local["ports"] == ["127.0.0.1:6379:6379"]       # the default publish address
    v6 = yaml.safe_load(_render(tmp_path, deployments["v6"]).content)["services"]["db"]
    assert v6["ports"] == ["[::1]:6379:6379"]


def test_empty_options_mean_host_network(tmp_path: Path) -> None:
    document = yaml.safe_load(_render(tmp_path, _project(tmp_path)["lan"], options={}).content)
    assert all(s["network_mode"] == "host" and "ports" not in s for s in document["services"].values())


@pytest.mark.parametrize("deployment", ["shop", "lan", "local", "v6"])
def test_every_rendering_validates(tmp_path: Path, deployment: str) -> None:
    rendered = _render(tmp_path, _project(tmp_path)[deployment])
    assert _schema_errors(yaml.safe_load(rendered.content)) == []
    _compose_config(tmp_path, rendered)


def test_docker_compose_reads_what_was_meant(tmp_path: Path) -> None:
    """Compose's own normal form: durations, env files read, ports, GPUs as dream meant them."""
    normal = yaml.safe_load(_compose_config(tmp_path, _render(tmp_path, _project(tmp_path)["lan"]), quiet=False))
    db, app = normal["services"]["db"], normal["services"]["app"]
    assert (db["healthcheck"]["interval"], db["healthcheck"]["timeout"], db["healthcheck"]["start_period"]) == (
        "200ms", "1500ms", "90s")
    assert db["restart"] == "no" and app["restart"] == "on-failure:3"
    assert app["environment"] == {"A": "1", "B": "2"}
    assert app["ports"] == ["0.0.0.0:8080:8080/tcp", "0.0.0.0:8081:8081/tcp"]
    assert app["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}]
    assert sorted(normal["volumes"]) == ["vol-cache", "vol-data", "vol-var-lib-db"]


def test_the_vendored_schema_is_the_one_noted() -> None:
    """tests/data/README.md names the schema's commit and sha256: an unnoted edit fails here."""
    noted = (SCHEMA.parent / "README.md").read_text()
    assert f"sha256 `{hashlib.sha256(SCHEMA.read_bytes()).hexdigest()}`" in noted


def test_the_schema_and_docker_compose_refuse_a_wrong_file(tmp_path: Path) -> None:
    """The two validators are awake: an unknown key fails both."""
    document = yaml.safe_load(_render(tmp_path, _project(tmp_path)["local"]).content)
    document["services"]["db"]["restrat"] = "no"
    assert _schema_errors(document) == ["'restrat' does not match any of the regexes: '^x-'"]
    with pytest.raises(AssertionError, match="restrat"):
        _compose_config(tmp_path, File("compose.yaml", yaml.safe_dump(document)))


def test_header_lists_what_compose_cannot_express(tmp_path: Path) -> None:
    deployments = _project(tmp_path)
    content = _render(tmp_path, deployments["shop"]).content
    header = content[:content.index("services:")].splitlines()
    assert header[0] == "# Deployment shop, rendered by dream (`doit render:compose`); do not edit."
    assert all(line.startswith("# ") for line in header)
    notes = [line[4:] for line in header if line.startswith("# - ")]
    assert notes == [
        "a service that ends (or a oneshot that fails) leaves the other containers running; dream "
        "stops the whole deployment unless the service is allowed_to_exit",
        "restart delays and counts are the engine's (from 100ms doubling to 1m, again from 100ms after "
        "a 10s run; the count never starts again), not backoff/max_backoff",
        "healthchecks go on after the first pass (dream stops probing then); a later failure only marks "
        "the container unhealthy",
        "env files are read by Compose's own dotenv reader (it may expand ${VAR} and quotes otherwise "
        "than dream's), and rank below the deployment's env and PORT (dream ranks them above)",
        "vol-cache: wiped as each container that wipes it starts (app, worker), engine restarts "
        "included, not once per deployment start",
        "db: initial_delay is the healthcheck's start_period: failures in it do not count, but a pass "
        "in it does (dream does not probe before it)",
        "db: healthy after one passing healthcheck (success_threshold 2 dropped)",
        "migrate: a oneshot is not restarted by the engine (restart on-failure dropped)",
        "app: its 2 replicas run in one container (one healthcheck, one restart policy for all)",
        "worker: restart always has no limit in the engine (max_restarts 5 dropped)",
        "worker: log_file logs/worker.log is written inside its container (kept only below a volume); "
        "`docker-compose logs` has the output",
    ]
    bridge = _render(tmp_path, deployments["local"]).content
    assert "# - bridge network: services reach each other by service name" in bridge
    assert "bridge network" not in content


@pytest.mark.parametrize("settings,policy", [
    ("restart: no", "no"),
    ("restart: on-failure\n    max_restarts: 0", "on-failure"),
    ("restart: on-failure\n    max_restarts: 7", "on-failure:7"),
    ("restart: always", "always"),
    ("restart: on-failure\n    oneshot: true", "no"),
], ids=["no", "on-failure-unlimited", "on-failure-7", "always", "oneshot"])
def test_restart_policies(tmp_path: Path, settings: str, policy: str) -> None:
    deployment = _project(tmp_path, f"services:\n  one:\n    command: x\n    {settings}\n")["shop"]
    rendered = _render(tmp_path, deployment)
    assert yaml.safe_load(rendered.content)["services"]["one"]["restart"] == policy
    _compose_config(tmp_path, rendered)


@pytest.mark.parametrize("seconds,text", [
    (0.0, "0s"), (0.2, "200ms"), (1.0, "1s"), (1.5, "1s500ms"), (12.0, "12s"), (90.0, "1m30s"),
    (3600.0, "1h"), (3725.25, "1h2m5s250ms"), (0.0015, "1ms500us"),
])
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_probe_under_a_millisecond_is_the_engines_least(tmp_path: Path) -> None:
    deployment = _project(tmp_path, "services:\n  one:\n    command: x\n"
                                    "    readiness: {tcp: {port: 9}, period: 0, timeout: 0}\n")["shop"]
    rendered = _render(tmp_path, deployment)
    check = yaml.safe_load(rendered.content)["services"]["one"]["healthcheck"]
    assert (check["interval"], check["timeout"]) == ("1ms", "1ms")
    assert "# - one: a readiness period or timeout under 1ms is 1ms (the engine's least)" in rendered.content
    _compose_config(tmp_path, rendered)


def test_a_dollar_in_the_root_stays_literal(tmp_path: Path) -> None:
    """Compose interpolates every value: the env file's path is written with ``$$``."""
    root = tmp_path / "a$HOME"
    deployment = _project(root, "services:\n  one:\n    command: x\n    env_files: [conf/base.env]\n")["shop"]
    rendered = _render(root, deployment)
    assert yaml.safe_load(rendered.content)["services"]["one"]["env_file"] == [f"{tmp_path}/a$$HOME/conf/base.env"]
    normal = yaml.safe_load(_compose_config(root, rendered, quiet=False))
    assert normal["services"]["one"]["environment"] == {"A": "1"}


def test_a_missing_image_is_one_line(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    with pytest.raises(DreamError) as caught:
        _render(tmp_path, deployment, images={"db": "shop-db:latest"})
    assert str(caught.value) == ("service migrate: no image to run it; run `doit render:images -d shop` "
                                 "(and load it) first")


def test_an_unknown_network_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DreamError, match=r"^compose network 'overlay': choose one of host, bridge$"):
        _render(tmp_path, _project(tmp_path)["shop"], options={"network": "overlay"})


@pytest.mark.parametrize("volumes,message", [
    ("[a-b, a/b]", "volumes 'a-b' and 'a/b' would both be the Compose volume vol-a-b; rename one"),
    ("['my data']", "service one: volume 'my data' cannot name a Compose volume (letters, digits, "
                    "`.`, `_`, `-` and `/` only)"),
], ids=["collision", "space"])
def test_volume_names_that_cannot_be(tmp_path: Path, volumes: str, message: str) -> None:
    deployment = _project(tmp_path, f"services:\n  one:\n    command: x\n    volumes: {volumes}\n")["shop"]
    with pytest.raises(DreamError) as caught:
        _render(tmp_path, deployment)
    assert str(caught.value) == message


def test_registered_and_repeatable(tmp_path: Path) -> None:
    assert RENDERERS["compose"].name == "compose"
    deployment = _project(tmp_path)["shop"]
    target = _target(tmp_path, deployment)
    assert RENDERERS["compose"].render(build_plan(deployment), target) == \
        RENDERERS["compose"].render(build_plan(deployment), target)


def test_the_docs_table_has_every_field() -> None:
    """docs/renderers.md's table names every service and deployment field (a new field must say
    how each target renders it)."""
    rows = [line.split("|")[1] for line in DOCS.read_text().splitlines() if line.startswith("| `")]
    named = {name for cell in rows for name in re.findall(r"`([a-z_]+)[^`]*`", cell)}
    missing = (set(SERVICE["schema"]) | set(DEPLOYMENT["schema"])) - named
    assert not missing, f"docs/renderers.md has no row for {sorted(missing)}"
