from __future__ import annotations

import math

import pytest
from references import warmup_cosine_scale

from lightly_graft.functional.schedules import momentum_schedule, scale_lr


def test_momentum_schedule__start_middle_end() -> None:
    steps = 101
    assert momentum_schedule(0, steps) == pytest.approx(0.99)
    assert momentum_schedule(50, steps) == pytest.approx(0.995)
    assert momentum_schedule(100, steps) == pytest.approx(1.0)
    # Cosine in between: MoCo v3's 1 - 0.5 * (1 + cos(pi * t / T)) * (1 - m0).
    t = 25 / 100
    assert momentum_schedule(25, steps) == pytest.approx(
        1 - 0.5 * (1 + math.cos(math.pi * t)) * 0.01
    )


def test_scale_lr__linear_rule() -> None:
    assert scale_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scale_lr(1.5e-5, 256) == pytest.approx(1.5e-5)
    with pytest.raises(ValueError):
        scale_lr(1e-3, 0)


def test_warmup_cosine_scale__shape() -> None:
    total, warmup = 100, 10
    assert warmup_cosine_scale(0, total, warmup) == pytest.approx(0.1)
    assert warmup_cosine_scale(9, total, warmup) == pytest.approx(1.0)
    assert warmup_cosine_scale(10, total, warmup) == pytest.approx(1.0)
    assert warmup_cosine_scale(99, total, warmup) == pytest.approx(0.0)
    values = [warmup_cosine_scale(s, total, warmup) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_warmup_cosine_scale__no_warmup_starts_at_one() -> None:
    assert warmup_cosine_scale(0, 50, 0) == pytest.approx(1.0)
