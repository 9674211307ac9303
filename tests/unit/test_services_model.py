"""Mistakes in `services:` and `deployments:`: each is one line, ``file:line: dotted.path: message``,
raised by `load_recipe` as a `DreamError` (several together as `UserErrors`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream.errors import DreamError, UserErrors
from dream.recipe.load import load_recipe
from dream.services.plan import build_plan

# (name, recipe text, expected start of the line, expected text in the message)
CASES = [
    ("unknown-dependency-list",
     "services:\n  app:\n    command: x\n    depends_on: [nope]\n",
     "recipes/bad.yaml:4: services.app.depends_on.nope", "no service named 'nope'"),
    ("unknown-dependency-map",
     "services:\n  app:\n    command: x\n    depends_on:\n      nope: started\n",
     "recipes/bad.yaml:5: services.app.depends_on.nope", "no service named 'nope'"),
    ("dependency-cycle",
     ("services:\n  a:\n    command: x\n    depends_on: [b]\n  b:\n    command: x\n    depends_on: [c]\n"
     "  c:\n    command: x\n    depends_on: [a]\n"),
     "recipes/bad.yaml:10: services.c.depends_on.a", "dependency cycle: a -> b -> c -> a"),
    ("healthy-without-readiness",
     "services:\n  db:\n    command: x\n  app:\n    command: x\n    depends_on:\n      db: healthy\n",
     "recipes/bad.yaml:7: services.app.depends_on.db", "db has no readiness probe, so it never becomes healthy"),
    ("healthy-without-readiness-long-form",
     "services:\n  db:\n    command: x\n  app:\n    command: x\n    depends_on:\n      db: {condition: healthy}\n",
     "recipes/bad.yaml:7: services.app.depends_on.db", "db has no readiness probe"),
    ("oneshot-restart-always",
     "services:\n  init:\n    command: x\n    oneshot: true\n    restart: always\n",
     "recipes/bad.yaml:5: services.init.restart", "a oneshot task cannot restart always"),
    ("oneshot-with-readiness",
     "services:\n  init:\n    command: x\n    oneshot: true\n    readiness: {exec: 'true'}\n",
     "recipes/bad.yaml:5: services.init.readiness", "a oneshot task has no readiness probe"),
    ("deployment-unknown-service",
     "services:\n  a:\n    command: x\ndeployments:\n  dev:\n    services: [a, ghost]\n",
     "recipes/bad.yaml:6: deployments.dev.services[1]", "no service named 'ghost'"),
    ("deployment-leaves-out-dependency",
     ("services:\n  db:\n    command: x\n  app:\n    command: x\n    depends_on: [db]\n"
     "deployments:\n  dev:\n    services: [app]\n"),
     "recipes/bad.yaml:9: deployments.dev.services", "app depends on db, which this deployment leaves out"),
    ("port-in-deployment-env",
     "services:\n  a:\n    command: x\ndeployments:\n  dev:\n    env:\n      PORT: 80\n",
     "recipes/bad.yaml:7: deployments.dev.env.PORT", "PORT is set per process; choose the first one with port_base"),
    ("port-base-overflow",
     "services:\n  a:\n    command: x\n  b:\n    command: x\n    replicas: 3\ndeployments:\n  dev:\n    port_base: 65450\n",
     "recipes/bad.yaml:9: deployments.dev.port_base",
     "its last process would get PORT=65552, above 65535 (each service takes 100 more, each replica 1 more); lower port_base"),
    ("bad-duration",
     "services:\n  a:\n    command: x\n    backoff: 2 minutes\n",
     "recipes/bad.yaml:4: services.a.backoff",
     "must be a number of seconds or a duration such as 500ms, 2s, 1m"),
    ("bad-duration-unit",
     "services:\n  a:\n    command: x\n    stop_grace_period: 5x\n",
     "recipes/bad.yaml:4: services.a.stop_grace_period",
     "must be a number of seconds or a duration such as 500ms, 2s, 1m"),
    ("bad-probe-duration",
     "services:\n  a:\n    command: x\n    readiness:\n      tcp: {port: 80}\n      period: soon\n",
     "recipes/bad.yaml:6: services.a.readiness.period",
     "must be a number of seconds or a duration such as 500ms, 2s, 1m"),
    ("negative-duration",
     "services:\n  a:\n    command: x\n    backoff: -1\n",
     "recipes/bad.yaml:4: services.a.backoff", "min value is 0"),
    ("bad-condition",
     "services:\n  db:\n    command: x\n  app:\n    command: x\n    depends_on:\n      db: running\n",
     "recipes/bad.yaml:7: services.app.depends_on.db", "unallowed value running"),
    ("bad-restart",
     "services:\n  a:\n    command: x\n    restart: sometimes\n",
     "recipes/bad.yaml:4: services.a.restart", "unallowed value sometimes"),
    ("missing-command",
     "services:\n  a:\n    oneshot: true\n",
     "recipes/bad.yaml:2: services.a.command", "required field"),
    ("probe-two-kinds",
     "services:\n  a:\n    command: x\n    readiness:\n      tcp: {port: 80}\n      exec: 'true'\n",
     "recipes/bad.yaml:4: services.a.readiness",
     "needs exactly one of exec, http, tcp (got exec, tcp)"),
    ("bad-service-name",
     "services:\n  Web:\n    command: x\n",
     "recipes/bad.yaml:2: services.Web", "must be a name of lowercase letters, digits, _ -"),
    ("config-file-missing-src",
     "services:\n  a:\n    command: x\n    config_files:\n      - {path: a.conf, src: nothing-here.conf}\n",
     "recipes/bad.yaml:5: services.a.config_files[0].src", "cannot read"),
]


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / "bad.yaml"
    path.write_text(text)
    return path


def _error_lines(tmp_path: Path, text: str) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(DreamError) as caught:
        load_recipe(path, tmp_path)
    return str(caught.value).splitlines()


@pytest.mark.parametrize("name,text,where,message", CASES, ids=[c[0] for c in CASES])
def test_one_clear_line(tmp_path: Path, name: str, text: str, where: str, message: str) -> None:
    assert message, "a row must say its message: an empty one matches any line"
    lines = _error_lines(tmp_path, text)
    assert len(lines) == 1, lines
    assert lines[0].startswith(where + ":"), lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in lines[0]


def test_self_dependency_is_one_line(tmp_path: Path) -> None:
    lines = _error_lines(tmp_path, "services:\n  a:\n    command: x\n    depends_on: [a]\n")
    assert lines == ["recipes/bad.yaml:4: services.a.depends_on.a: a service cannot depend on itself"]


def test_healthy_wait_on_a_oneshot_says_completed_successfully(tmp_path: Path) -> None:
    lines = _error_lines(tmp_path, "services:\n  init:\n    command: x\n    oneshot: true\n"
                                   "  app:\n    command: x\n    depends_on: {init: healthy}\n")
    assert len(lines) == 1, lines
    assert lines[0].startswith("recipes/bad.yaml:7: services.app.depends_on.init:"), lines[0]
    assert "wait for `completed_successfully`" in lines[0], lines[0]


def test_bad_duration_names_the_accepted_forms(tmp_path: Path) -> None:
    lines = _error_lines(tmp_path, "services:\n  a:\n    command: x\n    backoff: 2 minutes\n")
    assert len(lines) == 1 and "500ms" in lines[0], lines


def test_every_service_mistake_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "services:\n  db:\n    command: x\n  app:\n    command: x\n    depends_on:\n"
                            "      db: healthy\n      ghost: started\n  init:\n    command: x\n    oneshot: true\n"
                            "    restart: always\n")
    with pytest.raises(UserErrors) as caught:
        load_recipe(path, tmp_path)
    lines = str(caught.value).splitlines()
    assert len(caught.value.errors) == 3 == len(lines), lines
    assert any(l.startswith("recipes/bad.yaml:7: services.app.depends_on.db: db has no readiness probe") for l in lines)
    assert "recipes/bad.yaml:8: services.app.depends_on.ghost: no service named 'ghost'" in lines
    assert any(l.startswith("recipes/bad.yaml:12: services.init.restart: a oneshot task") for l in lines)


@pytest.mark.parametrize("spelling", ["no", "'no'", "false", "No"])
def test_restart_no_is_accepted_however_yaml_reads_it(tmp_path: Path, spelling: str) -> None:
    path = _write(tmp_path, f"services:\n  a:\n    command: x\n    restart: {spelling}\n")
    recipe = load_recipe(path, tmp_path)
    assert recipe.deployments["bad"].services["a"]["restart"] == "no"
    assert build_plan(recipe.deployments["bad"])["services"][0]["restart"] == "no"


def test_durations_and_defaults_normalize(tmp_path: Path) -> None:
    path = _write(tmp_path, "services:\n  db:\n    command: [server, --port]\n    args: [5432, true]\n"
                            "    backoff: 500ms\n    max_backoff: 1m\n    stop_grace_period: 2\n"
                            "    readiness: {exec: pg_isready, period: 1.5s}\n"
                            "  app:\n    command: run $PORT\n    args: [a b]\n    depends_on: {db: healthy}\n")
    recipe = load_recipe(path, tmp_path)
    deployment = recipe.deployments["bad"]           # implicit deployment, named like the recipe
    assert list(deployment.services) == ["db", "app"] and deployment.port_base == 5000
    plan = build_plan(deployment)
    db, app = plan["services"]
    assert db["argv"] == ["server", "--port", "5432", "true"]
    assert (db["backoff"], db["max_backoff"], db["stop_grace_period"]) == (0.5, 60.0, 2.0)
    assert db["readiness"]["kind"] == "exec" and db["readiness"]["period"] == 1.5
    assert db["readiness"]["argv"] == ["/bin/sh", "-c", "pg_isready"]
    assert app["argv"] == ["/bin/sh", "-c", "run $PORT 'a b'"]
    assert app["depends_on"] == {"db": "healthy"}
    assert plan["runtime_dir"] == ".dream/run/bad"
    assert build_plan(deployment, in_image=True)["runtime_dir"] == "/run/dream/bad"


def test_a_deployment_runs_its_services_in_its_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "services:\n  db:\n    command: x\n  app:\n    command: x\n    depends_on: [db]\n"
                            "  tool:\n    command: x\n"
                            "deployments:\n  dev:\n    services: [app, db]\n    port_base: 7000\n"
                            "  tools:\n    services: [tool]\n")
    recipe = load_recipe(path, tmp_path)
    assert set(recipe.deployments) == {"dev", "tools"}
    assert list(recipe.deployments["dev"].services) == ["app", "db"]
    assert recipe.deployments["dev"].port_base == 7000
    assert list(recipe.deployments["tools"].services) == ["tool"]
