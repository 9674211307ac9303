"""Values from the environment and from base images that used to break a build later, or
quietly become something else: refused in one line."""

from __future__ import annotations

import pytest

from dream.builders.from_image import _inherited
from dream.errors import DreamError
from dream.oci.image import LATEST_EPOCH, source_date_epoch


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", str(LATEST_EPOCH + 1), "9" * 400])
def test_a_bad_source_date_epoch_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(DreamError, match=r"^SOURCE_DATE_EPOCH must be whole seconds since 1970, at most 253402300799"):
        source_date_epoch()


@pytest.mark.parametrize("value, epoch", [("", 0), ("0", 0), (" 1700000000 ", 1700000000), (str(LATEST_EPOCH), LATEST_EPOCH)])
def test_good_source_date_epochs(monkeypatch: pytest.MonkeyPatch, value: str, epoch: int) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    assert source_date_epoch() == epoch


def test_a_base_config_of_the_right_shape_is_inherited() -> None:
    base = _inherited({"Env": ["A=1", "PATH=/bin"], "Labels": {"x": "y"}, "ExposedPorts": {"80/tcp": {}},
                       "Cmd": ["sh"], "User": "app", "WorkingDir": "/w"})
    assert base == {"env": {"A": "1", "PATH": "/bin"}, "labels": {"x": "y"}, "ports": ["80/tcp"],
                    "cmd": ["sh"], "user": "app", "workdir": "/w"}


@pytest.mark.parametrize("config, why", [
    ({"Labels": ["a", "b"]}, "Labels must be an object"),
    ({"Labels": {"a": 1}}, "Labels must map names to strings"),
    ({"Env": "A=1"}, "Env must be a list of strings"),
    ({"Cmd": "sh -c x"}, "Cmd must be a list of strings"),
    ({"User": 0}, "User must be a string"),
])
def test_a_base_config_of_another_shape_is_refused(config: dict, why: str) -> None:
    with pytest.raises(ValueError, match=f"^{why}$"):
        _inherited(config)
