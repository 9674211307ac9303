"""An image with a services layer in the real Docker engine: the image config carries a Docker
``Healthcheck`` from the deployment's readiness probes, the operator's ``docker run -e PORT=…``
is where the service listens (as in Cog's images), and the engine's health check, run with the
container's environment, probes that port and the JSON body."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Project, make_project, require_docker
from tests.integration.test_services_image import docker, wait_for_logs

pytestmark = pytest.mark.integration

RECIPE = """\
imports: [debian-python]
image: {name: port-demo}
services:
  model:
    command: exec python3 "$DREAM_CONFIG_DIR/server.py"
    config_files:
      - path: server.py
        content: |
          import http.server, json, os
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  self.send_response(200)
                  self.end_headers()
                  self.wfile.write(json.dumps({"status": "READY"}).encode())
              def log_message(self, *a):
                  pass
          print("listening on", os.environ["PORT"], flush=True)
          http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    readiness:
      http: {path: /health-check, json: {field: status, equals: READY}}
      period: 200ms
      failure_threshold: 50
layers:
  - name: services
    services: {}
"""
IMAGE = "port-demo:latest"
CONTAINER = "dream-test-port"


@pytest.fixture(scope="module")
def port_image(tmp_path_factory: pytest.TempPathFactory) -> Project:
    require_docker()
    project = make_project(tmp_path_factory.mktemp("port") / "p", {"port-demo.yaml": RECIPE}, with_demo=False)
    project.doit("lock:port-demo")
    project.doit("build:port-demo")
    project.doit("load:port-demo")
    return project


def test_the_image_config_has_the_deployment_s_healthcheck(port_image: Project) -> None:
    config = json.loads(docker("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["Healthcheck"] == {
        "Test": ["CMD", "python3", "-m", "dream_supervisor", "probe", "/etc/dream/deployments/port-demo.json"],
        "Interval": 200_000_000, "Timeout": 1_000_000_000, "Retries": 50}  # StartPeriod 0: Docker omits it


def test_docker_run_e_port_moves_the_service_and_the_health_check_follows(port_image: Project) -> None:
    docker("rm", "-f", CONTAINER, check=False)
    docker("run", "-d", "--pull", "never", "--network", "none", "-e", "PORT=5123", "--name", CONTAINER, IMAGE)
    try:
        logs = wait_for_logs(CONTAINER, "listening on", "model is ready")
        assert "listening on 5123" in logs and "listening on 5000" not in logs, logs
        assert 'model is ready (GET http://127.0.0.1:5123/health-check answered 200, status = "READY")' in logs
        deadline, health = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            health = json.loads(docker("inspect", CONTAINER).stdout)[0]["State"].get("Health") or {}
            if health.get("Status") == "healthy":
                break
            time.sleep(0.3)
        assert health.get("Status") == "healthy", health
        assert 'model: GET http://127.0.0.1:5123/health-check answered 200, status = "READY"' in health["Log"][-1]["Output"]
    finally:
        docker("rm", "-f", CONTAINER, check=False)
