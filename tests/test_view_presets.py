"""Tests for lightly_graft.data.view_presets (Masked MoCo §4.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T
from PIL import Image

from lightly_graft.data.view_presets import make_view_transform
from lightly_graft.errors import GraftError


def _image(size: int = 40) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("preset", ["strong", "medium", "light"])
def test_make_view_transform__two_views_of_input_size(preset: str) -> None:
    torch.manual_seed(0)
    views = make_view_transform(input_size=32, preset=preset)(_image())
    assert len(views) == 2
    assert all(v.shape == (3, 32, 32) for v in views)
    assert not torch.equal(views[0], views[1])


def test_light__views_share_one_crop() -> None:
    torch.manual_seed(0)
    transform = make_view_transform(input_size=32, preset="light")
    transform.color = T.ToTensor()  # type: ignore[union-attr]
    for _ in range(5):
        first, second = transform(_image())
        assert torch.equal(first, second)


def test_medium__views_are_diagonal_shifts_of_one_crop() -> None:
    torch.manual_seed(0)
    transform = make_view_transform(input_size=224, preset="medium")
    transform.color = T.ToTensor()  # type: ignore[union-attr]
    shifts = set()
    for _ in range(10):
        first, second = transform(_image(300))
        matches = [
            s
            for s in range(0, 33)
            if torch.equal(first[:, s:, s:], second[:, : 224 - s, : 224 - s])
        ]
        assert matches, "second view is not a diagonal shift of the first"
        shifts.add(matches[0])
    assert len(shifts) > 1


def test_make_view_transform__unknown_preset_suggests() -> None:
    with pytest.raises(GraftError, match="did you mean 'light'"):
        make_view_transform(preset="lite")
