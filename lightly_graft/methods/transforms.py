"""Default transforms of the contrastive methods: the data module's, with the
size-aware defaults of :func:`~lightly_graft.data.transforms.augmentation_defaults`
for anything not given (so a method's module-level ``transform`` and a recipe
run build their views the same way)."""

from __future__ import annotations

from typing import Any

from lightly.transforms import BYOLTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE

from lightly_graft.data import batched_views
from lightly_graft.data import transforms as data_transforms

TWO_VIEW_OPTIONS = (
    "cj_strength",
    "blur_probs",
    "blur_sigmas",
    "solarize_prob",
    "hflip_prob",
)


def two_view_transform(
    input_size: int = 224,
    min_scale: float | None = None,
    normalize: dict[str, list[float]] | None = None,
    **overrides: Any,
) -> BYOLTransform:
    """MoCo v3's asymmetric two-view augmentation (lightly's BYOL views).

    Args:
        input_size: Output side length in pixels.
        min_scale: Smallest crop area; default 0.08 (BYOL), 0.2 at <= 64 px.
        normalize: ``{"mean", "std"}``; default ImageNet's.
        overrides: Any of ``cj_strength``, ``blur_probs``, ``blur_sigmas``,
            ``solarize_prob``, ``hflip_prob``.
    """
    return data_transforms.two_view_transform(
        **_two_view_arguments(input_size, min_scale, normalize, overrides)
    )


def two_batched_views(
    input_size: int = 224,
    min_scale: float | None = None,
    normalize: dict[str, list[float]] | None = None,
    **overrides: Any,
) -> batched_views.IndependentViews:
    """The batched twin of :func:`two_view_transform` (same arguments and
    defaults): views made from a uint8 batch on its device, with kornia."""
    return batched_views.two_views(
        **_two_view_arguments(input_size, min_scale, normalize, overrides)
    )


def _two_view_arguments(
    input_size: int,
    min_scale: float | None,
    normalize: dict[str, list[float]] | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    unknown = set(overrides) - set(TWO_VIEW_OPTIONS)
    if unknown:
        raise TypeError(
            f"Unknown two-view options {sorted(unknown)}; valid: {TWO_VIEW_OPTIONS}."
        )
    defaults = data_transforms.augmentation_defaults(input_size)
    options = {k: defaults[k] for k in TWO_VIEW_OPTIONS}
    options.update(overrides)
    return {
        "input_size": input_size,
        "min_scale": defaults["min_scale"] if min_scale is None else min_scale,
        "normalize": normalize or IMAGENET_NORMALIZE,
        **options,
    }
