"""Batched views (kornia, on the batch) against the per-image transforms (lightly).

Statistical checks on seeded batches: the same images go through the per-image
transform one by one and through the batched twin at once, and per-sample
measurements (crop area and aspect ratio read from a coordinate image, flip,
grayscale, jitter, solarize and blur rates, colour values) must have the same
distribution: crop geometry by a two-sample Kolmogorov-Smirnov test (p > 1e-3),
colour values by their 10..90% quantiles (within 10 of 255 levels: PIL rounds
after each step), and rates within 4.5 binomial standard errors of the
probability. Each fails for a wrong parameter (min_scale 0.3 instead of 0.2 is
tested to fail; a probability off by 0.05 is > 4.5 errors at N = 1200).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp

from lightly_graft.data import batched_views, transforms
from lightly_graft.data.view_presets import make_view_transform
from lightly_graft.errors import DataError, GraftError

N = 1200
P_MIN = 1e-3


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # lightly's blur and solarize draw with numpy


def per_image(transform, images: torch.Tensor) -> list[torch.Tensor]:
    """Each (3, H, W) uint8 image through a per-image transform, as PIL."""
    _seed(1)
    outputs = [
        transform(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images
    ]
    return [torch.stack(views) for views in zip(*outputs, strict=True)]


def rate_ok(flags: torch.Tensor, p: float) -> bool:
    rate = flags.float().mean().item()
    return abs(rate - p) <= 4.5 * math.sqrt(max(p * (1 - p), 1e-4) / len(flags))


def same_distribution(a: torch.Tensor, b: torch.Tensor) -> bool:
    return ks_2samp(a.numpy(), b.numpy()).pvalue > P_MIN


QUANTILES = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])


def close_quantiles(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Quantiles 10..90% within ``tol``: for colour values, where PIL rounds to
    uint8 after every step (and quantises the hue shift to 1/255 of the circle)
    and kornia does not, a difference a KS test on 1200 samples can just see."""
    gap = (a.float().quantile(QUANTILES) - b.float().quantile(QUANTILES)).abs()
    return bool(gap.max() <= tol)


def coordinate_images(size: int, n: int = N) -> torch.Tensor:
    """R = 4 x, G = 4 y: a crop's box can be read back from its pixels."""
    ramp = torch.arange(size) * (252 // (size - 1))
    image = torch.stack(
        [
            ramp.expand(size, size),
            ramp[:, None].expand(size, size),
            torch.zeros(size, size, dtype=torch.long),
        ]
    )
    return image.to(torch.uint8).expand(n, -1, -1, -1).contiguous()


def crop_geometry(views: torch.Tensor, step: float) -> tuple[torch.Tensor, ...]:
    """(area fraction, log aspect ratio w/h, flipped) of each crop, from the
    coordinate channels: the crop's width is the range of R over the output
    row times S / (S - 1) (pixel centres), in source pixels."""
    size = views.shape[-1]
    red, green = views[:, 0] * 255 / step, views[:, 1] * 255 / step
    middle = size // 2
    row, col = red[:, middle, :], green[:, :, middle]
    width = (row.amax(1) - row.amin(1)) * size / (size - 1)
    height = (col.amax(1) - col.amin(1)) * size / (size - 1)
    flipped = row[:, -1] < row[:, 0]
    return width * height / size**2, torch.log(width / height), flipped


@pytest.mark.parametrize("min_scale", [0.2, 0.08])
def test_mae_views__crop_scale_ratio_and_flip_match_per_image(min_scale: float) -> None:
    size = 64
    images = coordinate_images(size)
    (expected,) = per_image(
        transforms.mae_transform(input_size=size, min_scale=min_scale, normalize=None),
        images,
    )
    views = batched_views.mae_views(
        input_size=size, min_scale=min_scale, normalize=None
    )
    (got,) = views(images)
    step = 252 // (size - 1)
    area, log_ratio, flipped = crop_geometry(got, step)
    area_ref, log_ratio_ref, flipped_ref = crop_geometry(expected.float(), step)
    assert same_distribution(area, area_ref)
    assert same_distribution(log_ratio, log_ratio_ref)
    assert rate_ok(flipped, 0.5) and rate_ok(flipped_ref, 0.5)
    # the ranges: area in [min_scale, 1], ratio in [3/4, 4/3] (1.5 px slack)
    slack = 3.0 / size
    assert area.min() >= min_scale - slack and area.max() <= 1 + slack
    assert log_ratio.abs().max() <= math.log(4 / 3) + slack


def test_mae_views__wrong_min_scale_is_detected() -> None:
    """The crop test can fail: min_scale 0.3 against lightly's 0.2."""
    size = 64
    images = coordinate_images(size)
    (expected,) = per_image(
        transforms.mae_transform(input_size=size, min_scale=0.2, normalize=None), images
    )
    (got,) = batched_views.mae_views(input_size=size, min_scale=0.3, normalize=None)(
        images
    )
    step = 252 // (size - 1)
    assert not same_distribution(
        crop_geometry(got, step)[0], crop_geometry(expected.float(), step)[0]
    )


def constant_images(color: tuple[int, int, int], size: int = 16) -> torch.Tensor:
    image = torch.tensor(color, dtype=torch.uint8)[:, None, None]
    return image.expand(N, 3, size, size).contiguous()


def color_stats(
    views: torch.Tensor, color: tuple[int, int, int]
) -> dict[str, torch.Tensor]:
    """Per sample: channel means (0..255), grayscale, unchanged."""
    means = views.float().mean(dim=(2, 3)) * 255
    original = torch.tensor(color, dtype=torch.float)
    return {
        "means": means,
        "gray": (means.max(1).values - means.min(1).values) < 0.5,
        "unchanged": (means - original).abs().max(1).values < 0.5,
    }


def test_two_views__color_probabilities_and_ranges_match_per_image() -> None:
    """Constant colour images (crop and blur change nothing): grayscale 0.2,
    untouched 0.2 x 0.8 (no jitter, no grayscale), and the jittered colours
    have lightly's distribution per channel."""
    color = (200, 120, 60)
    images = constant_images(color)
    options = {
        "input_size": 16,
        "min_scale": 0.2,
        "normalize": None,
        "blur_probs": (0.0, 0.0),
        "solarize_prob": 0.0,
    }
    expected = per_image(transforms.two_view_transform(**options), images)
    got = batched_views.two_views(**options)(images)
    for view, view_ref in zip(got, expected, strict=True):
        stats, ref = color_stats(view, color), color_stats(view_ref, color)
        assert rate_ok(stats["gray"], 0.2) and rate_ok(ref["gray"], 0.2)
        assert rate_ok(stats["unchanged"], 0.16) and rate_ok(ref["unchanged"], 0.16)
        jittered, jittered_ref = ~stats["unchanged"], ~ref["unchanged"]
        for channel in range(3):
            assert close_quantiles(
                stats["means"][jittered, channel],
                ref["means"][jittered_ref, channel],
                tol=10.0,
            ), channel


def test_two_views__hue_range_matches_per_image() -> None:
    """Hue alone (strength 0 for the rest is not an option, so: the hue of
    jittered, non-gray samples of a saturated colour)."""
    import kornia.color

    color = (150, 30, 30)  # no clipping: only the hue step moves the hue
    images = constant_images(color)
    options = {
        "input_size": 16,
        "min_scale": 0.2,
        "normalize": None,
        "blur_probs": (0.0, 0.0),
        "solarize_prob": 0.0,
    }
    got = batched_views.two_views(**options)(images)[0]
    ref = per_image(transforms.two_view_transform(**options), images)[0]

    def hue(views: torch.Tensor) -> torch.Tensor:
        h = kornia.color.rgb_to_hsv(views[:, :, :1, :1])[:, 0, 0, 0] / (2 * math.pi)
        sat = views.amax(1) - views.amin(1)
        h = torch.where(h > 0.5, h - 1, h)  # red is at 0: (-0.5, 0.5]
        return h[sat[:, 0, 0] > 0.05]

    h, h_ref = hue(got), hue(ref)
    # lightly: hue shift uniform in [-0.1, 0.1] of the circle
    assert h.abs().max() <= 0.1 + 0.01 and h_ref.abs().max() <= 0.1 + 0.01
    assert h.abs().max() >= 0.09 and h_ref.abs().max() >= 0.09
    assert close_quantiles(h, h_ref, tol=0.01)


def test_two_views__solarize_only_on_view_two() -> None:
    color = (200, 200, 200)  # gray: grayscale and saturation/hue leave it
    images = constant_images(color)
    options = {
        "input_size": 16,
        "min_scale": 0.2,
        "normalize": None,
        "cj_strength": 0.0,
        "blur_probs": (0.0, 0.0),
        "solarize_prob": 0.3,
    }
    got = batched_views.two_views(**options)(images)
    expected = per_image(transforms.two_view_transform(**options), images)
    for index, p in ((0, 0.0), (1, 0.3)):
        for views in (got[index], expected[index]):
            solarized = (views.mean(dim=(1, 2, 3)) * 255 - 55).abs() < 0.5
            assert rate_ok(solarized, p), (index, solarized.float().mean())


def edge_images(size: int = 32) -> torch.Tensor:
    """A vertical black/white edge: blur widens it; crop/flip (scale 1) keep
    its width."""
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    image[:, :, size // 2 :] = 255
    return image.expand(N, -1, -1, -1).contiguous()


def edge_width(views: torch.Tensor) -> torch.Tensor:
    """Pixels strictly between black and white on the middle row."""
    row = views[:, 0, views.shape[-1] // 2, :].float()
    return ((row > 0.02) & (row < 0.98)).sum(1).float()


def test_two_views__blur_probabilities_and_sigmas_match_per_image() -> None:
    """Edge images, crops of the whole image (min_scale 1), no colour: blur
    rates (1.0 and 0.4 here) and the blurred edge's width."""
    images = edge_images()
    options = {
        "input_size": 32,
        "min_scale": 1.0,
        "normalize": None,
        "cj_strength": 0.0,
        "blur_probs": (1.0, 0.4),
        "blur_sigmas": (0.8, 2.0),  # every blur visible on the edge
        "solarize_prob": 0.0,
        "hflip_prob": 0.0,
    }
    got = batched_views.two_views(**options)(images)
    expected = per_image(transforms.two_view_transform(**options), images)
    for index, p in ((0, 1.0), (1, 0.4)):
        width, width_ref = edge_width(got[index]), edge_width(expected[index])
        assert rate_ok(width > 0, p) and rate_ok(width_ref > 0, p)
        if p < 1:
            width, width_ref = width[width > 0], width_ref[width_ref > 0]
        assert close_quantiles(width, width_ref, tol=1.0)


@pytest.mark.parametrize("preset", ["strong", "medium", "light"])
def test_preset_views__same_colour_statistics_as_per_image(preset: str) -> None:
    color = (200, 120, 60)
    images = constant_images(color, size=32)
    expected = per_image(
        make_view_transform(
            input_size=16, preset=preset, min_scale=0.2, normalize=None
        ),
        images,
    )
    got = batched_views.preset_views(
        input_size=16, preset=preset, min_scale=0.2, normalize=None
    )(images)
    assert len(got) == len(expected) == 2
    for view, view_ref in zip(got, expected, strict=True):
        assert view.shape == (N, 3, 16, 16)
        stats, ref = color_stats(view, color), color_stats(view_ref, color)
        assert rate_ok(stats["gray"], ref["gray"].float().mean().item())
        for channel in range(3):
            assert close_quantiles(
                stats["means"][:, channel], ref["means"][:, channel], tol=10.0
            ), channel


def test_preset_views__light_shares_the_crop_medium_shifts_on_the_diagonal() -> None:
    size = 64
    images = coordinate_images(size, n=200)
    light = batched_views.preset_views(
        input_size=size, preset="light", min_scale=0.2, normalize=None
    )
    medium = batched_views.preset_views(
        input_size=size, preset="medium", min_scale=0.2, normalize=None
    )
    # coordinates survive the colour step only when neither jitter nor gray hit:
    # compare the geometry through the crop stage alone
    torch.manual_seed(0)
    crop = light.crop(images.float() / 255)
    assert crop.shape == (200, 3, size, size)
    big = medium.crop(images.float() / 255)
    first = batched_views._crop_at(big, torch.zeros(200, dtype=torch.long), size)
    torch.testing.assert_close(first, big[:, :, :size, :size])
    corner = torch.randint(0, medium.crop_size - size + 1, (200,))
    shifted = batched_views._crop_at(big, corner, size)
    for b in range(0, 200, 37):
        c = int(corner[b])
        torch.testing.assert_close(shifted[b], big[b, :, c : c + size, c : c + size])


def test_batched_views__seeded_stream_is_deterministic_and_resumable() -> None:
    images = torch.randint(0, 256, (8, 3, 28, 28), dtype=torch.uint8)
    views = batched_views.two_views(input_size=28, min_scale=0.2, normalize=None)
    views.manual_seed(3)
    first = views(images)
    state = views.state_dict()
    second = views(images)
    again = batched_views.two_views(input_size=28, min_scale=0.2, normalize=None)
    again.manual_seed(3)
    torch.manual_seed(123)  # the global RNG does not change the views ...
    global_state = torch.get_rng_state()
    torch.testing.assert_close(again(images), first)
    assert torch.equal(torch.get_rng_state(), global_state)  # ... nor they it
    again.load_state_dict(state)
    torch.testing.assert_close(again(images), second)
    assert not torch.equal(first[0], second[0])


def test_batched_views__grayscale_input_and_normalisation() -> None:
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    normalize = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (view,) = batched_views.mae_views(
        input_size=28, min_scale=1.0, normalize=normalize
    )(images)
    assert view.shape == (4, 3, 28, 28)
    assert view.min() >= -2 - 1e-4 and view.max() <= 2 + 1e-4


def test_mae_views__bicubic_crops_stay_in_range_like_pil() -> None:
    # Small crops of a black/white checkerboard upscaled bicubically overshoot
    # at every edge; PIL clamps to 0..255, so the batched views must clamp too.
    board = ((torch.arange(28)[:, None] // 2 + torch.arange(28) // 2) % 2) * 255
    images = board.to(torch.uint8).expand(64, 3, 28, 28).contiguous()
    torch.manual_seed(0)
    (view,) = batched_views.mae_views(input_size=28, min_scale=0.05, normalize=None)(
        images
    )
    assert view.min() >= 0.0 and view.max() <= 1.0
    assert (view > 0.02).logical_and(view < 0.98).any()  # resampled, not copied


def test_batched_views__float_input_is_a_clear_error() -> None:
    views = batched_views.mae_views(input_size=28, min_scale=0.2, normalize=None)
    with pytest.raises(DataError, match="uint8.*data.augment.batched: false"):
        views(torch.rand(2, 3, 28, 28))


def test_preset_views__unknown_preset() -> None:
    with pytest.raises(GraftError, match="did you mean 'light'"):
        batched_views.preset_views(preset="lite")
