"""The split rule of wheel layers (dream.builders.wheelset.split): big wheels alone, the small
layer bounded in bytes whatever the image's size."""

from __future__ import annotations

from dream.builders.wheelset import split
from dream.python.resolve import Wheel

MB = 1_000_000


def wheel(name: str, size: int) -> Wheel:
    return Wheel(name, "1", f"{name}-1-py3-none-any.whl", name * 8, size)


def layers(wheels: list[Wheel], min_size: int = 16 * MB, small: int = 4 * MB) -> list[tuple[str | None, list[str]]]:
    return [(big.name if big else None, [w.name for w in group]) for big, group in split(wheels, min_size, small)]


TORCH_LIKE = [wheel("torch", 800 * MB), wheel("sympy", 6 * MB), wheel("pillow", 5 * MB),
              wheel("torchvision", 7 * MB), wheel("networkx", 2 * MB), wheel("jinja2", MB // 8),
              wheel("filelock", MB // 50), wheel("mpmath", MB // 2), wheel("fsspec", MB // 5)]


def test_the_small_layer_stays_within_its_bytes_in_a_big_image() -> None:
    """0.85 MB of the smallest, then networkx (2 MB) fits; pillow (5 MB) would not."""
    assert layers(TORCH_LIKE) == [("pillow", ["pillow"]), ("sympy", ["sympy"]), ("torch", ["torch"]),
                                  ("torchvision", ["torchvision"]),
                                  (None, ["filelock", "fsspec", "jinja2", "mpmath", "networkx"])]


def test_every_small_wheel_is_smaller_than_every_wheel_that_left_the_small_layer() -> None:
    groups = split(TORCH_LIKE, 16 * MB, 3 * MB)
    small = groups[-1][1]
    assert sum(w.size for w in small) <= 3 * MB
    assert max(w.size for w in small) <= min(w.size for big, _ in groups[:-1] if big for w in [big])


def test_a_small_image_keeps_one_small_layer() -> None:
    few = [wheel("a", MB), wheel("b", MB), wheel("numpy", 17 * MB)]
    assert layers(few) == [("numpy", ["numpy"]), (None, ["a", "b"])]


def test_a_zero_budget_gives_every_wheel_a_layer() -> None:
    assert layers([wheel("a", 10), wheel("b", 20)], small=0) == [("a", ["a"]), ("b", ["b"])]
