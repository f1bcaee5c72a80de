"""keyword_arguments: a class's keyword arguments along **kwargs to its bases."""

from __future__ import annotations

from typing import Any

from lightly_graft import zoo
from lightly_graft.signatures import EMPTY, keyword_arguments


class _Base:
    def __init__(self, *, required: int, shared: str = "base", own: float = 1.0):
        pass


class _Child(_Base):
    def __init__(self, *, extra: bool = False, shared: str = "child", **kwargs: Any):
        super().__init__(shared=shared, **kwargs)


class _Closed(_Child):
    def __init__(self, *, only: int = 3) -> None:  # no **kwargs: the walk stops
        super().__init__(required=1)


def test_keyword_arguments__follow_kwargs_to_the_bases_subclass_default_wins() -> None:
    args = {a.name: a for a in keyword_arguments(_Child)}
    assert list(args) == ["extra", "shared", "required", "own"]
    assert args["shared"].default == "child" and args["shared"].owner is _Child
    assert args["required"].default is EMPTY and args["own"].owner is _Base
    assert [a.name for a in keyword_arguments(_Closed)] == ["only"]


def test_keyword_arguments__zoo_subclass_has_every_parent_argument() -> None:
    byol = {a.name: a.default for a in keyword_arguments(zoo.get("masked_byol").cls)}
    moco = {a.name for a in keyword_arguments(zoo.get("grafted_moco").cls)}
    assert moco <= set(byol)  # GraftedMoCo's and SSLMethod's, through two levels
    assert byol["objective"] == "byol" and byol["predictor_last_norm"] is False
    assert byol["head_norm"] == "layer" and byol["num_chunks"] == 8
    assert byol["batch_size_per_device"] is EMPTY
