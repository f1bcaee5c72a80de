"""Masked MoCo's two-view augmentation presets: strong, medium, light (§4.1).

papers/masked_moco_improved_baseline.md, §4.1 (Table 4: light is best):

- ``strong``: two independent crops, colour jitter + grayscale + Gaussian blur,
  solarisation on one crop: the MoCo v3 / BYOL augmentation, taken from lightly's
  ``BYOLView1Transform`` / ``BYOLView2Transform``.
- ``medium``: one crop of 256/224 x the input size, then two input-size crops on
  its diagonal at a random distance of 0..32 px (scaled with the input size; the
  paper's numbers are for 224 px), then colour augmentation per view.
- ``light``: one shared crop (random resized crop + flip), colour augmentation
  applied twice.

lightly has the strong pipeline but no shared-crop or diagonal-shift two-view
transform, hence the two small classes here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor

from lightly_graft.errors import GraftError, did_you_mean, format_options

PRESETS = ("strong", "medium", "light")
#: ``medium``: the large crop's side over the views' (256 / 224: 32 px of room
#: for the diagonal shift at 224).
DIAGONAL_CROP_SCALE = 256 / 224

# one image (PIL or tensor) -> the list of its views
ViewTransform = Callable[[Any], list[Tensor]]


def _color_and_tensor(normalize: dict[str, list[float]] | None) -> Any:
    """Colour jitter (0.4, 0.4, 0.2, 0.1; p=0.8) + grayscale (p=0.2) + tensor."""
    transforms = [
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToTensor(),
    ]
    if normalize:
        transforms.append(T.Normalize(mean=normalize["mean"], std=normalize["std"]))
    return T.Compose(transforms)


class SharedCropTransform:
    """``light``: one random resized crop + flip, colour-augmented twice.

    Args:
        input_size: Output size in pixels.
        min_scale: Lower bound of the crop's area fraction.
        normalize: ``{"mean": [...], "std": [...]}`` or None.
    """

    #: Side of the one crop per image, as a multiple of ``input_size``.
    crop_scale = 1.0

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.08,
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        self.input_size = input_size
        self.crop_size = round(input_size * self.crop_scale)
        self.crop = T.Compose(
            [
                T.RandomResizedCrop(self.crop_size, scale=(min_scale, 1.0)),
                T.RandomHorizontalFlip(),
            ]
        )
        self.color = _color_and_tensor(normalize)

    def __call__(self, image: Any) -> list[Tensor]:
        crop = self.crop(image)
        return [self.color(crop), self.color(crop)]


class DiagonalCropTransform(SharedCropTransform):
    """``medium``: two crops on the diagonal of one larger crop (CMAE-style shift).

    A random resized crop of ``round(input_size * 256 / 224)`` px (plus flip), then
    two ``input_size`` crops whose top-left corners are ``(o, o)`` and
    ``(o + s, o + s)`` with the shift ``s`` uniform in 0..(big - input_size) (0..32
    px at 224) and ``o`` uniform in the room left; colour augmentation per view.
    Arguments as :class:`SharedCropTransform` (``min_scale`` bounds the large
    crop).
    """

    crop_scale = DIAGONAL_CROP_SCALE

    def __call__(self, image: Any) -> list[Tensor]:
        big = self.crop(image)
        room = self.crop_size - self.input_size
        shift = int(torch.randint(0, room + 1, ()).item())
        offset = int(torch.randint(0, room - shift + 1, ()).item())
        size = self.input_size
        first = T.functional.crop(big, offset, offset, size, size)
        second = T.functional.crop(big, offset + shift, offset + shift, size, size)
        return [self.color(first), self.color(second)]


class StrongTransform:
    """``strong``: MoCo v3 / BYOL views from lightly (solarisation on view 2)."""

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.08,
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        kwargs = {"input_size": input_size, "min_scale": min_scale}
        self.views: list[Callable[[Any], Tensor]] = [
            BYOLView1Transform(**kwargs, normalize=normalize),  # type: ignore[arg-type]
            BYOLView2Transform(**kwargs, normalize=normalize),  # type: ignore[arg-type]
        ]

    def __call__(self, image: Any) -> list[Tensor]:
        return [view(image) for view in self.views]


def make_view_transform(
    input_size: int = 224,
    preset: str = "light",
    min_scale: float = 0.08,
    normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
) -> ViewTransform:
    """Two-view transform of Masked MoCo §4.1 by preset name.

    Args:
        input_size: Output size in pixels (224 in the paper).
        preset: ``"strong"``, ``"medium"`` or ``"light"`` (the paper's best).
        min_scale: Lower bound of the random resized crop's area fraction.
        normalize: ``{"mean": [...], "std": [...]}`` or None.

    Returns:
        A callable mapping one image (PIL or tensor) to a list of two tensors.

    Raises:
        GraftError: for an unknown preset.
    """
    classes: dict[str, Callable[..., ViewTransform]] = {
        "strong": StrongTransform,
        "medium": DiagonalCropTransform,
        "light": SharedCropTransform,
    }
    if preset not in classes:
        raise GraftError(
            f"unknown augmentation preset '{preset}'{did_you_mean(preset, PRESETS)}; "
            f"valid presets: {format_options(PRESETS)}."
        )
    return classes[preset](
        input_size=input_size, min_scale=min_scale, normalize=normalize
    )
