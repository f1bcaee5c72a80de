"""Transforms: lightly's MAE and BYOL-style views, plus an evaluation transform.

- Step i (MIM): lightly's ``MAETransform`` (random resized crop + flip), one view.
- Step ii (CL): lightly's ``BYOLTransform`` built from ``BYOLView1Transform`` and
  ``BYOLView2Transform``: MoCo v3 uses BYOL's asymmetric augmentations (Chen et
  al., 2021, Sec. 4: "we follow the augmentations of BYOL"), two views.
- kNN bank/query: resize + centre crop + to tensor + normalise, no randomness.
- Batched views (:mod:`lightly_graft.data.batched_views`): the dataset only
  decodes (``decode_transform``: uint8 tensor, resized once where needed) and
  the views are made from the batch on the training device.

``augmentation_defaults(input_size)`` gives the values used when a recipe leaves
them unset. At 224 px they are lightly's (= BYOL's); for small images (at most
64 px: Fashion-MNIST's 28, CIFAR's 32) Gaussian blur is switched off, as in
lightly's own CIFAR-10 BYOL example (``examples/pytorch/byol.py``: "We disable
resizing and gaussian blur for cifar10"): a sigma of up to 2 px erases most of
a 28 px image. The smallest crop is raised to 20% of the image so that a crop
still shows part of an object at 28 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms as T
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    MAETransform,
)
from torch import Tensor

SMALL_IMAGE_SIZE = 64

#: BYOL's asymmetric two views at 224 px (lightly's ``BYOLView1Transform`` /
#: ``BYOLView2Transform``): the defaults of both :func:`two_view_transform` and
#: its batched twin ``batched_views.two_views``, and of ``augmentation_defaults``.
BYOL_VIEWS: dict[str, Any] = {
    "cj_strength": 1.0,
    "blur_probs": (1.0, 0.1),
    "blur_sigmas": (0.1, 2.0),
    "solarize_prob": 0.2,
    "hflip_prob": 0.5,
}


def augmentation_defaults(input_size: int) -> dict[str, Any]:
    """Default augmentation values for an input size (see the module docstring).

    Returns:
        ``{"min_scale", "mae_min_scale", "cj_strength", "blur_probs", "blur_sigmas",
        "solarize_prob", "hflip_prob"}``.
    """
    small = input_size <= SMALL_IMAGE_SIZE
    return {
        "min_scale": 0.2 if small else 0.08,
        "mae_min_scale": 0.2,
        **BYOL_VIEWS,
        "blur_probs": (0.0, 0.0) if small else BYOL_VIEWS["blur_probs"],
    }


def mae_transform(
    *, input_size: int, min_scale: float, normalize: dict[str, list[float]]
) -> MAETransform:
    """lightly's ``MAETransform``: returns a list with one view, (3, size, size)."""
    return MAETransform(input_size=input_size, min_scale=min_scale, normalize=normalize)


def two_view_transform(
    *,
    input_size: int,
    min_scale: float,
    normalize: dict[str, list[float]],
    cj_strength: float = BYOL_VIEWS["cj_strength"],
    blur_probs: Sequence[float] = BYOL_VIEWS["blur_probs"],
    blur_sigmas: Sequence[float] = BYOL_VIEWS["blur_sigmas"],
    solarize_prob: float = BYOL_VIEWS["solarize_prob"],
    hflip_prob: float = BYOL_VIEWS["hflip_prob"],
) -> BYOLTransform:
    """MoCo v3 / BYOL two-view transform: returns a list of two (3, size, size) views.

    Args:
        input_size: Output side length in pixels.
        min_scale: Smallest random-resized-crop area fraction.
        normalize: ``{"mean": [...], "std": [...]}``.
        cj_strength: Colour jitter strength (lightly's ``cj_strength``).
        blur_probs: Gaussian blur probability of view 1 and view 2 (BYOL: 1.0, 0.1).
        blur_sigmas: Range of the blur sigma in pixels.
        solarize_prob: Solarization probability of view 2 (BYOL: 0.2; view 1: 0).
        hflip_prob: Horizontal flip probability of both views.
    """
    common: dict[str, Any] = {
        "input_size": input_size,
        "min_scale": min_scale,
        "cj_strength": cj_strength,
        "sigmas": tuple(blur_sigmas),
        "hf_prob": hflip_prob,
        "normalize": normalize,
    }
    view_1 = BYOLView1Transform(
        gaussian_blur=blur_probs[0], solarization_prob=0.0, **common
    )
    view_2 = BYOLView2Transform(
        gaussian_blur=blur_probs[1], solarization_prob=solarize_prob, **common
    )
    return BYOLTransform(view_1_transform=view_1, view_2_transform=view_2)


class _FastPathTransform:
    """A torchvision ``Compose`` for PIL images, plus the same transform applied
    to a whole batch of decoded uint8 images that already have its output size.

    Datasets that hold decoded arrays (the embedded Fashion-MNIST) call
    :meth:`on_uint8_batch` from ``__getitems__`` instead of one PIL round trip
    per image (``fromarray``, ``convert``, the no-op resize and crop, then back
    to a tensor), which was most of the loader's time at 28 px. The values are
    bitwise those of ``__call__`` (tested): torchvision is not written for
    batches of arrays, so the batched form is ours.
    """

    def __init__(self, compose: T.Compose, input_size: int) -> None:
        self.compose = compose
        self.input_size = input_size

    def __call__(self, image: Any) -> Tensor:
        return self.compose(image)

    def on_uint8_batch(self, images: Tensor) -> Tensor | None:
        """(B, 3, H, W) uint8 -> the stacked outputs of ``__call__``; None if the
        images do not have the output size (resizing stays per image)."""
        if tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            return None
        return self._batch(images)

    def _batch(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self.compose)


class EvalTransform(_FastPathTransform):
    """:func:`eval_transform`: resize, centre crop, ``ToTensor``, ``Normalize``."""

    def __init__(self, input_size: int, normalize: dict[str, list[float]]) -> None:
        super().__init__(
            T.Compose(
                [
                    T.Resize(input_size, interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(input_size),
                    T.ToTensor(),
                    T.Normalize(mean=normalize["mean"], std=normalize["std"]),
                ]
            ),
            input_size,
        )
        self.normalize = normalize

    def _batch(self, images: Tensor) -> Tensor:
        # ToTensor's (default dtype, / 255), then Normalize's sub_ and div_ with
        # the statistics in the images' dtype, as Normalize converts them.
        x = images.to(torch.get_default_dtype()).div(255)
        mean, std = (
            torch.as_tensor(self.normalize[k], dtype=x.dtype).view(1, -1, 1, 1)
            for k in ("mean", "std")
        )
        return x.sub_(mean).div_(std)


class DecodeTransform(_FastPathTransform):
    """:func:`decode_transform`: resize, centre crop, ``PILToTensor``."""

    def __init__(self, input_size: int) -> None:
        super().__init__(
            T.Compose(
                [
                    T.Resize(input_size, interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(input_size),
                    T.PILToTensor(),
                ]
            ),
            input_size,
        )

    def _batch(self, images: Tensor) -> Tensor:
        return images.contiguous()


def eval_transform(
    *, input_size: int, normalize: dict[str, list[float]]
) -> EvalTransform:
    """Deterministic transform for kNN bank/query images: (3, size, size) tensor.

    Resizes the short side to ``input_size`` and centre-crops a square (a no-op
    for images that already have that size).
    """
    return EvalTransform(input_size, normalize)


def decode_transform(*, input_size: int) -> DecodeTransform:
    """PIL image -> (3, input_size, input_size) uint8 tensor, for batched views.

    An image of another size is resized once (short side to ``input_size``,
    bicubic) and centre-cropped to a square, so that images stack into a batch;
    the random crops are then drawn from that square (from the whole image in
    the per-image path). An image that has the size already is only converted.
    """
    return DecodeTransform(input_size)
