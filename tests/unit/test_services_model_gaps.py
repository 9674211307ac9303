"""Issue 19's service-model fields — ``pre_start``, volume seeds, an http probe's JSON body
check, a services layer's Healthcheck — in the recipe model (one-line errors), the plan, and
each renderer that maps them (Procfile, systemd, Kubernetes). The supervisor running them on
real processes: tests/integration/test_supervisor_service_model.py."""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dream.errors import DreamError
from dream.oci.image import image_config
from dream.recipe.load import load_recipe
from dream.renderers.base import File, Target
from dream.renderers.kubernetes import KubernetesRenderer
from dream.renderers.procfile import render as render_procfile
from dream.renderers.procfile import service_line
from dream.renderers.systemd import SystemdRenderer, network_probe_argv
from dream.services.healthcheck import deployment_healthcheck
from dream.services.plan import build_plan
from dream.supervisor.plan import JsonCheck, plan_from_json
from dream.supervisor.probes import json_verdict
from tests.unit.test_systemd_render import _verify, split_command_line


def _load(root: Path, text: str) -> Any:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(exist_ok=True)
    path = root / "recipes" / "bad.yaml"
    path.write_text(text)
    return load_recipe(path, root)


def _error(root: Path, text: str) -> str:
    with pytest.raises(DreamError) as caught:
        _load(root, text)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- the model: one line per mistake, at its file:line and field path ---------------------------

@pytest.mark.parametrize("text,where,message", [
    ("services:\n  a:\n    command: x\n    volumes:\n      - path: data\n        seed:\n"
     "          - {path: ../out.txt, content: x}\n",
     "recipes/bad.yaml:7: services.a.volumes[0].seed[0].path", "must name something below the volume"),
    ("services:\n  a:\n    command: x\n    volumes:\n      - path: data\n        seed:\n"
     "          - {path: a.txt, src: nothing-here.txt}\n",
     "recipes/bad.yaml:7: services.a.volumes[0].seed[0].src", "cannot read"),
    ("services:\n  a:\n    command: x\n    volumes:\n      - {path: data, seed: [{path: a.txt}]}\n",
     "recipes/bad.yaml:5: services.a.volumes[0].seed[0]", "src"),
    ("services:\n  a:\n    command: x\n    volumes: [{path: data, seed: [{path: a, content: x}]}]\n"
     "  b:\n    command: x\n    volumes:\n      - {path: ./data, seed: [{path: b, content: y}]}\n",
     "recipes/bad.yaml:8: services.b.volumes[0].seed", "volume data is seeded by service a already"),
    ("services:\n  a:\n    command: x\n    readiness:\n      http: {json: {field: 'a..b', equals: 1}}\n",
     "recipes/bad.yaml:5: services.a.readiness.http.json.field", "keys separated by single dots"),
    ("services:\n  a:\n    command: x\n    readiness:\n      http: {json: {field: status}}\n",
     "recipes/bad.yaml:5: services.a.readiness.http.json.equals", "required"),
    ("services:\n  a:\n    command: x\n    pre_start: []\n",
     "recipes/bad.yaml:4: services.a.pre_start", "empty"),
])
def test_a_mistake_is_one_line(tmp_path: Path, text: str, where: str, message: str) -> None:
    line = _error(tmp_path, text)
    assert line.startswith(where + ":"), line
    assert message in line, line


def test_the_plan_carries_pre_start_seeds_and_the_json_check(tmp_path: Path) -> None:
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "app.conf").write_text("port = 1\n")
    recipe = _load(tmp_path, """\
services:
  a:
    command: x
    pre_start: ./migrate --check
    volumes:
      - data
      - {path: conf, seed: [{path: etc/app.conf, src: ../seed/app.conf}, {path: k, content: v, mode: "0600"}]}
    readiness: {http: {path: /h, json: {field: setup.status, equals: READY}}}
    liveness: {http: {json: {field: ok, equals: true}}}
""")
    plan = build_plan(recipe.deployments["bad"])
    service = plan["services"][0]
    assert service["pre_start"] == ["/bin/sh", "-c", "./migrate --check"]
    assert service["volumes"][0]["seed"] == []
    assert service["volumes"][1]["seed"] == [{"path": "etc/app.conf", "content": "port = 1\n", "mode": "0644"},
                                             {"path": "k", "content": "v", "mode": "0600"}]
    assert service["readiness"]["json"] == {"field": "setup.status", "equals": "READY"}
    read = plan_from_json(json.loads(json.dumps(plan))).services[0]
    assert read.pre_start == ["/bin/sh", "-c", "./migrate --check"]
    assert [(f.path, f.mode) for f in read.volumes[1].seed] == [("etc/app.conf", 0o644), ("k", 0o600)]
    assert read.readiness is not None and read.readiness.json == JsonCheck("setup.status", "READY")
    assert read.liveness is not None and read.liveness.json == JsonCheck("ok", True)


def test_an_older_plan_without_the_new_fields_still_reads() -> None:
    service = plan_from_json({"version": 1, "name": "d", "services": [
        {"name": "a", "argv": ["x"], "volumes": [{"path": "data"}],
         "readiness": {"kind": "http", "initial_delay": 0, "period": 1, "timeout": 1,
                       "success_threshold": 1, "failure_threshold": 3}}]}).services[0]
    assert service.pre_start is None and service.volumes[0].seed == []
    assert service.readiness is not None and service.readiness.json is None


# -- the JSON body check -------------------------------------------------------------------------

@pytest.mark.parametrize("field,equals,body,ok,detail", [
    ("status", "READY", b'{"status": "READY"}', True, 'status = "READY"'),
    ("status", "READY", b'{"status": "STARTING"}', False, 'status = "STARTING" (wanted "READY")'),
    ("setup.status", "succeeded", b'{"setup": {"status": "succeeded"}}', True, 'setup.status = "succeeded"'),
    ("items.1.up", True, b'{"items": [{"up": false}, {"up": true}]}', True, "items.1.up = true"),
    ("up", True, b'{"up": 1}', False, "up = 1 (wanted true)"),
    ("n", 1, b'{"n": true}', False, "n = true (wanted 1)"),
    ("n", 2, b'{"n": 2.0}', True, "n = 2.0"),
    ("gone", None, b'{"gone": null}', True, "gone = null"),
    ("status", "READY", b'{"state": "READY"}', False, 'no status in its JSON (wanted "READY")'),
    ("status", "READY", b"<html>ok</html>", False, "a body that is not JSON ('<html>ok</html>'; wanted status = \"READY\")"),
    ("a.b", 1, b'{"a": "text"}', False, "no a.b in its JSON (wanted 1)"),
])
def test_json_verdict(field: str, equals: Any, body: bytes, ok: bool, detail: str) -> None:
    assert json_verdict(JsonCheck(field, equals), body) == (ok, detail)


@pytest.fixture
def json_server() -> Iterator[tuple[int, list[bytes]]]:
    """An http server answering 200 with the next body of the list it yields (the last one again)."""
    bodies: list[bytes] = [b'{"status": "STARTING"}']

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], bodies
    finally:
        server.shutdown()
        server.server_close()


# -- Healthcheck of a services layer -------------------------------------------------------------

HEALTH = """\
services:
  db:
    command: x
    readiness: {exec: "true", period: 200ms, timeout: 2s, initial_delay: 1s, failure_threshold: 10}
  app:
    command: x
    replicas: 2
    depends_on: {db: healthy}
    readiness: {http: {json: {field: status, equals: READY}}, period: 1s, timeout: 500ms, failure_threshold: 3}
  init:
    command: x
    oneshot: true
  plain:
    command: x
"""


def test_a_deployment_healthcheck_covers_every_probe(tmp_path: Path) -> None:
    plan = build_plan(_load(tmp_path, HEALTH).deployments["bad"], in_image=True)
    check = deployment_healthcheck("/etc/dream/deployments/bad.json", plan["services"])
    assert check == {"Test": ["CMD", "python3", "-m", "dream_supervisor", "probe", "/etc/dream/deployments/bad.json"],
                     "Interval": 200_000_000,               # the shortest period
                     "Timeout": 3_000_000_000,              # 2 s + 2 replicas × 0.5 s, probed one after another
                     "StartPeriod": 1_000_000_000,
                     "Retries": 25}                         # (10 × 0.2 s + 3 × 1 s) / 0.2 s
    only_db = [s for s in plan["services"] if s["name"] == "db"]
    assert deployment_healthcheck("p", only_db) == {  # one service: its own probe's numbers
        "Test": ["CMD", "python3", "-m", "dream_supervisor", "probe", "p"], "Interval": 200_000_000,
        "Timeout": 2_000_000_000, "StartPeriod": 1_000_000_000, "Retries": 10}
    assert deployment_healthcheck("p", [s for s in plan["services"] if s["name"] in ("init", "plain")]) is None


def test_the_image_config_carries_the_healthcheck() -> None:
    check = {"Test": ["CMD", "true"], "Interval": 1, "Timeout": 2, "StartPeriod": 0, "Retries": 3}
    assert image_config({"healthcheck": check}, [])["config"]["Healthcheck"] == check
    assert "Healthcheck" not in image_config({}, [])["config"]


# -- Procfile ------------------------------------------------------------------------------------

SEEDS = """\
services:
  app:
    pre_start: echo "pre $DREAM_SERVICE"; test ! -e fail
    command: echo "main ran"
    volumes:
      - path: data
        seed: [{path: conf/a.conf, content: "seeded\\n", mode: "0640"}]
"""


def _sh(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DREAM_", "HONCHO"))}
    return subprocess.run(["/bin/sh", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=10)


def test_the_procfile_line_seeds_an_empty_volume_once_and_runs_pre_start_first(tmp_path: Path) -> None:
    plan = build_plan(_load(tmp_path, SEEDS).deployments["bad"])
    out = tmp_path / "build"
    files = render_procfile(plan, Target(tmp_path, out))
    seeds = [f for f in files if f.path.startswith("seed/")]
    assert seeds == [File("seed/app/0/conf/a.conf", "seeded\n", 0o640)]
    for file in seeds:
        (out / file.path).parent.mkdir(parents=True, exist_ok=True)
        (out / file.path).write_text(file.content)
    line = service_line(plan["services"][0], "bad", tmp_path, out / "config")
    first = _sh(line, tmp_path)
    assert (first.returncode, first.stdout) == (0, "pre app\nmain ran\n"), first
    seeded = tmp_path / "data" / "conf" / "a.conf"
    assert seeded.read_text() == "seeded\n" and stat.S_IMODE(seeded.stat().st_mode) == 0o640
    seeded.write_text("changed\n")
    assert _sh(line, tmp_path).returncode == 0
    assert seeded.read_text() == "changed\n"  # never written over
    (tmp_path / "fail").write_text("")
    failed = _sh(line, tmp_path)
    assert failed.returncode != 0 and failed.stdout == "pre app\n", failed  # the service does not start


# -- systemd -------------------------------------------------------------------------------------

def test_systemd_runs_pre_start_as_exec_start_pre_and_seeds_in_the_prepare_unit(tmp_path: Path) -> None:
    plan = build_plan(_load(tmp_path, SEEDS).deployments["bad"])
    out = tmp_path / "build"
    files = SystemdRenderer().render(plan, Target(tmp_path, out, options={}))
    by_path = {f.path: f for f in files}
    unit = by_path["bad-app.service"].content.splitlines()
    pre = [line for line in unit if line.startswith("ExecStartPre=")]
    assert [split_command_line(line[len("ExecStartPre="):]) for line in pre] == [
        ["/bin/sh", "-c", 'echo "pre $DREAM_SERVICE"; test ! -e fail']]
    assert unit.index(pre[0]) < next(i for i, line in enumerate(unit) if line.startswith("ExecStart="))
    assert by_path["config/.seed/app/0/conf/a.conf"] == File("config/.seed/app/0/conf/a.conf", "seeded\n", 0o640)
    prepare = [split_command_line(line[len("ExecStart="):])
               for line in by_path["bad-dream-prepare.service"].content.splitlines() if line.startswith("ExecStart=")]
    seed = next(argv for argv in prepare if argv[3] == "dream-seed")
    assert seed[4:] == [str(tmp_path / "data"), "-", str(out / "config/.seed/app/0/conf/a.conf"), "conf/a.conf", "0640"]
    (out / "config/.seed/app/0/conf").mkdir(parents=True)
    (out / "config/.seed/app/0/conf/a.conf").write_text("seeded\n")
    for argv in prepare:  # the prepare unit's commands, as systemd runs them
        assert subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    seeded = tmp_path / "data" / "conf" / "a.conf"
    assert seeded.read_text() == "seeded\n" and stat.S_IMODE(seeded.stat().st_mode) == 0o640
    seeded.write_text("changed\n")
    for argv in prepare:
        assert subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    assert seeded.read_text() == "changed\n"
    _verify(files)


def test_systemd_s_http_probe_checks_the_json_body(json_server: tuple[int, list[bytes]]) -> None:
    port, bodies = json_server
    probe = {"kind": "http", "host": "127.0.0.1", "path": "/", "scheme": "http", "timeout": 2.0,
             "initial_delay": 0.0, "period": 0.05, "success_threshold": 1, "failure_threshold": 3,
             "json": {"field": "status", "equals": "READY"}}
    once = subprocess.run(network_probe_argv(probe, port, False, once=True), capture_output=True, text=True, timeout=20)
    assert once.returncode == 1 and 'status = "STARTING" (wanted "READY")' in once.stderr, once
    bodies[:] = [b'{"status": "STARTING"}', b'{"status": "STARTING"}', b'{"status": "READY"}']
    waited = subprocess.run(network_probe_argv(probe, port, False, once=False), capture_output=True, text=True, timeout=20)
    assert waited.returncode == 0 and 'status = "READY"' in waited.stdout, waited


# -- Kubernetes ----------------------------------------------------------------------------------

def test_kubernetes_runs_a_json_readiness_through_the_probe_tool(tmp_path: Path) -> None:
    recipe = _load(tmp_path, """\
services:
  model:
    command: x
    ports: [5000]
    readiness: {http: {path: /health-check, json: {field: status, equals: READY}}}
    liveness: {http: {path: /health-check, json: {field: status, equals: READY}}}
""")
    deployment = recipe.deployments["bad"]
    target = Target(tmp_path, tmp_path / "out", images={"model": "model:latest"}, options={"images": "local"})
    files = KubernetesRenderer().render(build_plan(deployment), target)
    objects = list(yaml.safe_load_all(files[1].content))
    (workload,) = [o for o in objects if o["kind"] == "Deployment"]
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"] == [
        "python3", "-m", "dream_supervisor", "probe", "/etc/dream/services/bad-model.json"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health-check"
    header = files[1].content
    assert "# - model: its http readiness checks a JSON body, which an httpGet probe cannot" in header
    assert "# - model: the livenessProbe checks the http status only, not the JSON body" in header
