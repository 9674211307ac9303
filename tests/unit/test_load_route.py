"""How `doit load` reaches the engine (dream/engine.py `choose_route`): a pull from the store on
127.0.0.1 where the engine can reach it without TLS, else the archive, each with its reason."""

from __future__ import annotations

from typing import Any

import pytest

from dream.engine import Loaded, choose_route
from dream.errors import DreamError
from dream.registry.serve import _parse_range

LOCAL = "http+docker://localhost"  # docker-py's base_url for the unix socket
INFO: dict[str, Any] = {"ServerVersion": "20.10.24", "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
                        "SecurityOptions": ["name=seccomp,profile=default"],
                        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}}


def test_a_local_engine_that_trusts_loopback_pulls() -> None:
    assert choose_route(INFO, LOCAL).via == "registry"
    assert choose_route(INFO, "http+unix:///var/run/docker.sock", "auto").via == "registry"


@pytest.mark.parametrize(("info", "base_url", "reason"), [
    (INFO, "http://10.0.0.5:2375", "not on this machine"),
    (INFO, "https://127.0.0.1:2376", "not on this machine"),
    (INFO, "http+docker://ssh", "not on this machine"),
    ({**INFO, "SecurityOptions": ["name=seccomp,profile=default", "name=rootless"]}, LOCAL, "rootless"),
    ({**INFO, "OperatingSystem": "Docker Desktop"}, LOCAL, "Docker Desktop"),
    ({**INFO, "RegistryConfig": {"InsecureRegistryCIDRs": ["10.0.0.0/8"]}}, LOCAL, "without TLS"),
    ({**INFO, "RegistryConfig": None}, LOCAL, "without TLS"),
])
def test_where_the_pull_cannot_work_the_archive_is_sent(info: dict[str, Any], base_url: str, reason: str) -> None:
    route = choose_route(info, base_url)
    assert route.via == "archive" and reason in route.reason


def test_the_setting_forces_either_way_and_rejects_anything_else() -> None:
    assert choose_route(INFO, LOCAL, "archive").via == "archive"
    assert choose_route(INFO, "http://10.0.0.5:2375", "registry").via == "registry"
    with pytest.raises(DreamError, match="one of auto, registry, archive"):
        choose_route(INFO, LOCAL, "tarball")


def test_the_summary_line() -> None:
    assert str(Loaded(["a:1", "a:latest"], "registry", 10, 2, 1234)) == \
        "loaded a:1, a:latest (2 of 10 layers sent, 1,234 bytes)"


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)), ("bytes=90-500", (90, 99)),
    ("bytes=100-", None), ("bytes=9-3", None), ("bytes=-", None), ("items=0-1", None), ("bytes=0-1,5-6", None),
])
def test_ranges(header: str, expected: tuple[int, int] | None) -> None:
    assert _parse_range(header, 100) == expected
