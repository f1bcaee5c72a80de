"""Default transforms of the contrastive methods (lightly's, sizes configurable)."""

from __future__ import annotations

from typing import Any

from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.transforms.utils import IMAGENET_NORMALIZE


def two_view_transform(
    input_size: int = 224,
    min_scale: float = 0.08,
    normalize: dict[str, list[float]] | None = None,
    **kwargs: Any,
) -> BYOLTransform:
    """MoCo v3's asymmetric two-view augmentation (BYOL's: blur 1.0 / 0.1,
    solarize 0.0 / 0.2), lightly's ``BYOLTransform``. Extra keyword arguments go to
    both views (e.g. ``cj_strength``, ``random_gray_scale``, ``gaussian_blur``)."""
    normalize = normalize or IMAGENET_NORMALIZE
    view_1 = BYOLView1Transform(
        input_size=input_size, min_scale=min_scale, normalize=normalize, **kwargs
    )
    view_2 = BYOLView2Transform(
        input_size=input_size, min_scale=min_scale, normalize=normalize, **kwargs
    )
    return BYOLTransform(view_1_transform=view_1, view_2_transform=view_2)
