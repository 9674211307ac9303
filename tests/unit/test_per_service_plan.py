"""The one-service plan a per-service image runs (decision 2 of issue 15), and the recipe keys
that container renderers and plugins read: `compose:` of a deployment, `renderers:` and
`managers:` of a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream.errors import DreamError, UserErrors
from dream.recipe.load import load_recipe
from dream.services.per_service import image_tag, one_service_plan, probe_argv, service_plan_path
from dream.services.plan import build_plan
from dream.supervisor.plan import plan_from_json

SERVICES = """\
services:
  db:
    command: x
    env_files: [db.env]
    readiness: {exec: 'true'}
    restart: always
  migrate:
    command: x
    oneshot: true
    depends_on: {db: healthy}
  app:
    command: x
    replicas: 2
    depends_on: {db: healthy, migrate: completed_successfully}
    restart: on-failure
    allowed_to_exit: true
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / "demo.yaml"
    path.write_text(text)
    return load_recipe(path, tmp_path)


def test_only_that_service_with_the_orchestrator_s_duties_taken_out(tmp_path: Path) -> None:
    deployment = load(tmp_path, SERVICES + "deployments:\n  d:\n    port_base: 6000\n    env: {A: b}\n").deployments["d"]
    whole = build_plan(deployment, in_image=True)
    plan = one_service_plan(deployment, "app")
    assert [s["name"] for s in plan["services"]] == ["app"]
    app = plan["services"][0]
    assert (app["depends_on"], app["env_files"], app["restart"], app["allowed_to_exit"]) == ({}, [], "no", False)
    assert app["replicas"] == 2  # replicas stay inside the container
    unchanged = {k: v for k, v in whole["services"][2].items()
                 if k not in ("depends_on", "env_files", "restart", "allowed_to_exit")}
    assert {k: v for k, v in app.items() if k in unchanged} == unchanged
    assert {k: v for k, v in plan.items() if k not in ("services", "port_base")} == \
        {k: v for k, v in whole.items() if k not in ("services", "port_base")}
    assert plan["runtime_dir"] == "/run/dream/d"
    db = one_service_plan(deployment, "db")["services"][0]
    assert (db["env_files"], db["restart"]) == ([], "no")


def test_every_process_keeps_the_port_it_has_on_the_host(tmp_path: Path) -> None:
    deployment = load(tmp_path, SERVICES + "deployments:\n  d:\n    port_base: 6000\n").deployments["d"]
    ports = {name: plan_from_json(one_service_plan(deployment, name)).port_base for name in deployment.services}
    assert ports == {"db": 6000, "migrate": 6100, "app": 6200}


def test_an_unknown_service_is_one_line(tmp_path: Path) -> None:
    deployment = load(tmp_path, SERVICES).deployments["demo"]
    with pytest.raises(DreamError, match="deployment demo has no service 'web' \\(it has db, migrate, app\\)"):
        one_service_plan(deployment, "web")


def test_names_of_the_per_service_image() -> None:
    assert service_plan_path("d", "app") == "/etc/dream/services/d-app.json"
    assert probe_argv("d", "app") == ["python3", "-m", "dream_supervisor", "probe", "/etc/dream/services/d-app.json"]
    assert image_tag("d", "app") == "d-app"


def test_renderer_options_are_normalized_also_for_the_implicit_deployment(tmp_path: Path) -> None:
    text = SERVICES + "deployments:\n  host:\n    services: [db]\n  bridged:\n    services: [db]\n" \
                      "    compose: {network: bridge, publish_address: 0.0.0.0}\n" \
                      "    kubernetes: {network: cluster, namespace: shop, storage: 20Gi}\n"
    deployments = load(tmp_path, text).deployments
    kubernetes = {"network": "host", "images": "pushed", "storage": "1Gi", "age_identity_secret": "dream-age-identity"}
    assert deployments["host"].options == {"compose": {"network": "host", "publish_address": "127.0.0.1"},
                                           "kubernetes": kubernetes, "systemd": {"scope": "system"}, "vm": {}}
    assert deployments["bridged"].options == {
        "compose": {"network": "bridge", "publish_address": "0.0.0.0"},
        "kubernetes": {"network": "cluster", "namespace": "shop", "images": "pushed", "storage": "20Gi",
                       "age_identity_secret": "dream-age-identity"},
        "systemd": {"scope": "system"}, "vm": {}}
    implicit = load(tmp_path, SERVICES).deployments["demo"]
    assert implicit.options == {"compose": {"network": "host", "publish_address": "127.0.0.1"},
                                "kubernetes": kubernetes, "systemd": {"scope": "system"}, "vm": {}}


@pytest.mark.parametrize("setting, message", [
    ("{namespace: Shop}", "namespace"),
    ("{storage: lots}", "storage"),
    ("{network: overlay}", "network"),
], ids=["namespace", "storage", "network"])
def test_bad_kubernetes_settings_are_one_line(tmp_path: Path, setting: str, message: str) -> None:
    text = SERVICES + f"deployments:\n  one:\n    services: [db]\n    kubernetes: {setting}\n"
    with pytest.raises(DreamError) as caught:
        load(tmp_path, text)
    assert f"deployments.one.kubernetes.{message}" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("compose,message", [
    ("{network: nat}", "deployments.d.compose.network: unallowed value nat"),
    ("{publish_address: localhost}", "deployments.d.compose.publish_address: must be an IP address"),
    ("{ports: all}", "deployments.d.compose.ports: unknown field"),
])
def test_bad_compose_options(tmp_path: Path, compose: str, message: str) -> None:
    with pytest.raises(UserErrors, match=message):
        load(tmp_path, SERVICES + f"deployments:\n  d:\n    compose: {compose}\n")


def test_renderers_and_managers_of_a_recipe(tmp_path: Path) -> None:
    recipe = load(tmp_path, "renderers: {hello: 'hello_plugin.render:Hello'}\n"
                            "managers: {hello: 'hello_plugin.run:HelloManager'}\n")
    assert recipe.renderers == {"hello": "hello_plugin.render:Hello"}
    assert recipe.managers == {"hello": "hello_plugin.run:HelloManager"}
    assert load(tmp_path, SERVICES).renderers == {} == load(tmp_path, SERVICES).managers


@pytest.mark.parametrize("text,message", [
    ("renderers: {Hello: 'a:B'}\n", "renderers.Hello: must be a name of lowercase letters"),
    ("managers: {hello: 'no_class'}\n", "managers.hello: must be an object reference module:Class"),
    ("managers: {hello: 'a b:C'}\n", "managers.hello: must be an object reference module:Class"),
])
def test_bad_plugin_names(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserErrors, match=message):
        load(tmp_path, text)
