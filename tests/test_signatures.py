"""keyword_arguments: a class's keyword arguments along **kwargs to its bases."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from annotated_types import Ge, Interval

from lightly_graft import zoo
from lightly_graft.errors import GraftError
from lightly_graft.signatures import EMPTY, check_bounds, keyword_arguments


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


class _Bounded:
    def __init__(
        self,
        *,
        count: Annotated[int, Ge(1)] = 1,
        share: Annotated[float, Interval(gt=0, le=1)] = 0.5,
        size: Annotated[int, Ge(0)] | None = None,
        free: int = -5,
    ) -> None:
        check_bounds(_Bounded, locals())


def test_check_bounds__enforces_each_annotated_bound_and_passes_none() -> None:
    _Bounded(count=1, share=1.0, size=0)  # on the bounds: allowed
    _Bounded(size=None, free=-100)  # None and unbounded arguments pass
    for kwargs, message in [
        ({"count": 0}, "_Bounded: count must be >= 1, got 0."),
        ({"share": 0.0}, "_Bounded: share must be > 0, got 0.0."),
        ({"share": 1.5}, "_Bounded: share must be <= 1, got 1.5."),
        ({"size": -1}, "_Bounded: size must be >= 0, got -1."),
    ]:
        with pytest.raises(GraftError) as info:
            _Bounded(**kwargs)
        assert str(info.value) == message
