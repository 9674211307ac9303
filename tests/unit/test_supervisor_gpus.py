"""`gpus: N`: replica i (from 0) of a service sees GPUs i*N … i*N+N-1 through
CUDA_VISIBLE_DEVICES, unless the service's own env sets it; `gpus: all` sets nothing. The field
travels from the recipe through the plan to the supervisor."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream.errors import UserErrors
from dream.recipe.load import load_recipe
from dream.services.plan import build_plan
from dream.supervisor.plan import plan_from_json
from dream.supervisor.supervisor import Supervisor, visible_gpus


def recipe(tmp_path: Path, services: str):  # type: ignore[no-untyped-def]
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / "gpu.yaml"
    path.write_text("services:\n" + services)
    return load_recipe(path, tmp_path)


def plan(tmp_path: Path, services: str):  # type: ignore[no-untyped-def]
    return plan_from_json(build_plan(recipe(tmp_path, services).deployments["gpu"]))


def environments(tmp_path: Path, services: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    supervisor = Supervisor(plan(tmp_path, services), tmp_path)
    try:
        return {inst.id: supervisor.environment(inst, None).get("CUDA_VISIBLE_DEVICES")
                for inst in supervisor.instances}
    finally:
        supervisor.loop.close()


def test_each_replica_gets_gpus_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = environments(tmp_path, "  train:\n    command: x\n    gpus: 2\n    replicas: 3\n"
                                   "  one:\n    command: x\n    gpus: 1\n", monkeypatch)
    assert found == {"train.1": "0,1", "train.2": "2,3", "train.3": "4,5", "one.1": "0"}


def test_all_and_none_set_nothing_and_the_service_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = environments(tmp_path, "  every:\n    command: x\n    gpus: all\n"
                                   "  plain:\n    command: x\n"
                                   "  pinned:\n    command: x\n    gpus: 2\n    env: {CUDA_VISIBLE_DEVICES: '7'}\n",
                         monkeypatch)
    assert found == {"every.1": None, "plain.1": None, "pinned.1": "7"}


def test_the_plan_carries_gpus(tmp_path: Path) -> None:
    deployment = recipe(tmp_path, "  a:\n    command: x\n    gpus: 3\n  b:\n    command: x\n    gpus: all\n"
                                  "  c:\n    command: x\n").deployments["gpu"]
    assert [s["gpus"] for s in build_plan(deployment)["services"]] == [3, "all", None]
    assert [s.gpus for s in plan_from_json(build_plan(deployment)).services] == [3, "all", None]


def test_visible_gpus() -> None:
    service = plan_from_json({"version": 1, "name": "d", "services": [{"name": "a", "argv": ["x"], "gpus": 4}]}).services[0]
    assert visible_gpus(service, 1) == "0,1,2,3"
    assert visible_gpus(service, 2) == "4,5,6,7"


@pytest.mark.parametrize("value", [0, -1, True, "two", 1.5])
def test_a_gpu_count_is_all_or_a_whole_number_from_1(tmp_path: Path, value: object) -> None:
    text = f"  a:\n    command: x\n    gpus: {str(value).lower() if isinstance(value, bool) else value}\n"
    with pytest.raises(UserErrors) as caught:
        recipe(tmp_path, text)
    assert "services.a.gpus" in str(caught.value)


@pytest.mark.parametrize("value", [0, True, "some", 1.5])
def test_the_plan_reader_refuses_other_gpu_values(value: object) -> None:
    with pytest.raises(ValueError, match="gpus must be"):
        plan_from_json({"version": 1, "name": "d", "services": [{"name": "a", "argv": ["x"], "gpus": value}]})
