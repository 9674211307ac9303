"""The supervisor on the host, with real processes, for the service-model fields of issue 19:
``pre_start``, volume seeds, the operator's ``PORT`` and an http readiness probe that checks a
JSON body. The harness (a project in tmp_path, the plan dream makes, `python -m
dream.supervisor` read line by line) is test_supervisor.py's."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_supervisor import Harness, free_port_base

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


# -- pre_start ----------------------------------------------------------------------------------

def test_pre_start_runs_before_each_start_with_the_service_s_environment(harness: Harness) -> None:
    """Before each start (restarts too), in the service's env and directory, its output under the
    service's prefix and in its log file; the service starts only after it exited 0."""
    base = free_port_base((0,))
    run, code = harness.run(f"""\
deployments:
  dev:
    port_base: {base}
services:
  app:
    working_dir: work
    volumes: [work]
    env: {{GREETING: hi}}
    log_file: logs/app.log
    pre_start: echo "pre $GREETING $PORT $DREAM_INSTANCE in $(pwd)"; echo ran >> pre-count
    command: echo "main after $(wc -l < pre-count) pre_start"; exit 1
    restart: on-failure
    backoff: 10ms
    max_restarts: 1
""", deployment="dev")
    out = run.output
    work = harness.root / "work"
    assert run.texts("app") == [f"pre hi {base} app.1 in {work}", "main after 1 pre_start",
                                f"pre hi {base} app.1 in {work}", "main after 2 pre_start"], out
    assert run.index("dream", "^app pre_start started") < run.index("app", "^main after 1")
    assert (harness.root / "logs" / "app.log").read_text().splitlines() == run.texts("app")
    assert "app gave up after 1 restarts" in out
    assert code == 1, out


def test_a_failing_pre_start_is_a_failed_start_under_the_restart_policy(harness: Harness) -> None:
    run, code = harness.run("""\
services:
  app:
    pre_start: [/bin/sh, -c, 'echo "not yet"; exit 3']
    command: echo "the service ran"
    restart: on-failure
    backoff: 10ms
    max_restarts: 2
  other:
    depends_on: [app]
    command: echo "other ran"
""")
    out = run.output
    assert "the service ran" not in out and "other ran" not in out, out
    assert run.texts("app") == ["not yet"] * 3, out
    assert "app pre_start exited with code 3; restart 1/2 in" in out
    assert "app gave up after 2 restarts (last: pre_start exited with code 3)" in out
    assert "other was not started (dependency app can never be started" in out
    assert code == 1, out
    run, code = harness.run("""\
services:
  app:
    pre_start: exit 5
    command: echo "the service ran"
""")
    assert "app pre_start exited with code 5: stopping the deployment" in run.output, run.output
    assert "the service ran" not in run.output
    assert code == 1


def test_a_stop_during_pre_start_stops_it_and_the_service_never_starts(harness: Harness) -> None:
    run = harness.start(harness.recipe("""\
services:
  app:
    pre_start: echo waiting; exec sleep 30
    command: echo "the service ran"
"""))
    run.wait_for("^waiting$", name="app")
    run.signal(15)
    code = run.wait(5)
    assert "app stopped in its pre_start (killed by SIGTERM)" in run.output, run.output
    assert "the service ran" not in run.output
    assert code == 0
    harness.assert_nothing_left()


# -- volume seeds -------------------------------------------------------------------------------

SEEDED = """\
services:
  app:
    volumes:
      - path: data
        seed:
          - {path: conf/app.conf, src: ../seed/app.conf}
          - {path: secret.txt, content: "s3cret\\n", mode: "0600"}
      - path: scratch
        persistent: false
        seed: [{path: fresh.txt, content: "fresh\\n"}]
    command: |
      cat data/conf/app.conf scratch/fresh.txt
      echo changed > data/conf/app.conf
      echo more > scratch/fresh.txt
"""


def test_seeds_fill_an_empty_volume_once_and_are_never_written_over(harness: Harness) -> None:
    harness.file("seed/app.conf", "from the project\n")
    first, code = harness.run(SEEDED)
    assert code == 0, first.output
    assert first.texts("app") == ["from the project", "fresh"], first.output
    assert "app: seeded volume data (2 files)" in first.output
    data = harness.root / "data"
    assert stat.S_IMODE((data / "secret.txt").stat().st_mode) == 0o600
    assert (data / "conf" / "app.conf").read_text() == "changed\n"
    second, code = harness.run(SEEDED)  # data holds files: kept; scratch was wiped: seeded again
    assert code == 0, second.output
    assert second.texts("app") == ["changed", "fresh"], second.output
    assert "seeded volume data" not in second.output and "seeded volume scratch" in second.output


def test_a_volume_that_already_holds_anything_is_not_seeded(harness: Harness) -> None:
    harness.file("seed/app.conf", "from the project\n")
    harness.file("data/existing.db", "the operator's data\n")
    run, code = harness.run(SEEDED)
    assert code == 0, run.output
    data = harness.root / "data"
    assert sorted(p.name for p in data.iterdir()) == ["existing.db"], run.output
    assert "seeded volume data" not in run.output


# -- the operator's PORT -------------------------------------------------------------------------

PORTS = """\
services:
  web:
    replicas: 2
    command: echo "$DREAM_INSTANCE $PORT"
    oneshot: true
  api:
    command: echo "api $PORT"
    oneshot: true
  pinned:
    env: {PORT: "7777"}
    command: echo "pinned $PORT"
    oneshot: true
"""


def test_port_in_the_supervisor_s_environment_replaces_port_base(harness: Harness,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    run, code = harness.run(PORTS)
    assert (run.texts("web.1"), run.texts("api")) == (["web.1 5000"], ["api 5100"]), run.output
    base = free_port_base((0, 1, 100))
    monkeypatch.setenv("PORT", str(base))
    run, code = harness.run(PORTS)
    assert code == 0, run.output
    assert run.texts("web.1") == [f"web.1 {base}"], run.output
    assert run.texts("web.2") == [f"web.2 {base + 1}"], run.output
    assert run.texts("api") == [f"api {base + 100}"], run.output
    assert run.texts("pinned") == ["pinned 7777"], run.output  # a service's own env.PORT still wins


@pytest.mark.parametrize("value,reason", [("http", "PORT='http' in the environment is not a port from 1 to 65535"),
                                          ("65500", "PORT=65500 in the environment would give a process PORT=65700")])
def test_a_port_that_is_no_port_stops_the_setup(harness: Harness, monkeypatch: pytest.MonkeyPatch,
                                                value: str, reason: str) -> None:
    monkeypatch.setenv("PORT", value)
    run, code = harness.run(PORTS)
    assert code == 2, run.output
    assert f"cannot start deployment demo: {reason}" in run.output
    assert not run.texts("web.1")


# -- an http probe that checks a JSON body ------------------------------------------------------

STARTING_SERVER = """\
import http.server, json, os, sys
asked = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global asked
        asked += 1
        status = "READY" if asked > int(sys.argv[1]) else "STARTING"
        body = json.dumps({"setup": {"status": status, "asked": asked}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_a_json_body_probe_waits_for_the_field_s_value(harness: Harness) -> None:
    """A server that answers 200 while it is still starting: `healthy` waits for READY."""
    harness.file("server.py", STARTING_SERVER)
    base = free_port_base((0,))
    text = f"""\
deployments:
  dev:
    port_base: {base}
services:
  model:
    command: exec "$PY" server.py %d
    readiness:
      http: {{path: /health-check, json: {{field: setup.status, equals: READY}}}}
      period: 50ms
      failure_threshold: %d
  client:
    depends_on: {{model: healthy}}
    command: echo "client ran"
"""
    run, code = harness.run(text % (3, 40), deployment="dev")
    out = run.output
    assert (f"model is ready (GET http://127.0.0.1:{base}/health-check answered 200, "
            'setup.status = "READY")') in out, out
    assert run.texts("client") == ["client ran"], out
    assert code == 0, out
    run, code = harness.run(text % (1000, 5), deployment="dev")
    out = run.output
    assert (f"model not ready after 5 probes (GET http://127.0.0.1:{base}/health-check answered 200, "
            'setup.status = "STARTING" (wanted "READY"))') in out, out
    assert "client ran" not in out
    assert code == 1, out
