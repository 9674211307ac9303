"""The ``vm:`` settings (dream.vm.spec): sizes, defaults, refusals."""

from __future__ import annotations

import pytest

from dream.errors import DreamError
from dream.vm.packages import DEFAULT_PACKAGES
from dream.vm.spec import parse_size, vm_spec


def test_sizes() -> None:
    assert parse_size("512M", "x") == 512 << 20
    assert parse_size("2GiB", "x") == 2 << 30
    assert parse_size("1g", "x") == 1 << 30
    assert parse_size(4096, "x") == 4096
    for bad in ("big", "1.5G", True):
        with pytest.raises(DreamError, match="a size like"):
            parse_size(bad, "vm.memory")  # type: ignore[arg-type]


def test_defaults_and_settings() -> None:
    spec = vm_spec(None)
    assert spec.packages == tuple(DEFAULT_PACKAGES) and (spec.memory, spec.cpus) == (512, 2)
    assert spec.disk_size == 1 << 30 and spec.data_size == 1 << 30
    spec = vm_spec({"packages": ["curl", "kmod"], "memory": "1G", "cpus": 4, "disk_size": "2G", "data_size": "256M"})
    assert spec.packages == tuple(DEFAULT_PACKAGES) + ("curl",)
    assert (spec.memory, spec.cpus, spec.disk_size, spec.data_size) == (1024, 4, 2 << 30, 256 << 20)
    assert "memory" not in spec.key_inputs() and spec.key_inputs()["disk_size"] == 2 << 30


@pytest.mark.parametrize("settings, message", [
    ({"gpus": 1}, "unknown setting 'gpus'"),
    ({"cpus": 0}, "vm.cpus"),
    ({"memory": "64M"}, "at least 128M"),
    ({"disk_size": "10M"}, "at least 64M"),
])
def test_refusals(settings: dict[str, object], message: str) -> None:
    with pytest.raises(DreamError, match=message):
        vm_spec(settings)
