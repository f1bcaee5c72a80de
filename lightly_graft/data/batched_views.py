"""Views made from a whole batch on the device it lives on, with kornia.

The batched twins of the per-image transforms (:mod:`lightly_graft.data.transforms`,
:mod:`lightly_graft.data.view_presets`): same augmentations, same parameter
distributions, drawn per sample, applied to the batch at once (on the GPU when
the batch is there). Each takes a batch of decoded images, (B, C, H, W) uint8
with C = 1 or 3, and returns the list of normalised (B, 3, size, size) float views.

=================  ===========================  ==================================
per-image          batched                      views
=================  ===========================  ==================================
``mae_transform``  :func:`mae_views`            MAE: crop + flip (bicubic)
``two_view_...``   :func:`two_views`            MoCo v3 / BYOL asymmetric pair
view presets       :func:`preset_views`         Masked MoCo strong/medium/light
MTL                ``methods.mtl``              the BYOL pair + MAE's view
=================  ===========================  ==================================

Matching lightly's per-image pipeline (BYOL view = random resized crop, flip,
``RandomApply(ColorJitter, 0.8)``, grayscale 0.2, blur, solarize, normalise):

- Crop: kornia's ``RandomResizedCrop`` draws like torchvision's (area uniform in
  ``scale``, log-uniform aspect ratio in (3/4, 4/3), 10 tries, then the whole
  image); ``align_corners=False`` as in PIL/torchvision resizing.
- Colour jitter: kornia's ``ColorJitter`` has torchvision's formulas and ranges
  (brightness/contrast/saturation factors in [1 - s, 1 + s], hue shift in
  [-h, h]). One deviation: kornia draws the order of the four adjustments once
  per batch, torchvision once per image (each image's order is still uniform).
- Blur: lightly blurs with PIL's ``GaussianBlur(radius=sigma)``, sigma uniform in
  ``sigmas``, an unbounded kernel; kornia needs a kernel size:
  ``2 * ceil(3 * sigma_max) + 1`` (13 px for sigma 2) holds 99.7% of the mass.
- Solarize: PIL inverts pixels ``>= 128``; kornia's ``RandomSolarize`` with the
  threshold fixed at 128/255 and no addition does the same on [0, 1] floats.
- Colour maths run on floats: PIL rounds to uint8 after each step, these do not.

Randomness: kornia draws its parameters with torch's global CPU generator
(kornia modules that are never moved to a device keep their RNG on the CPU, so
a seed gives the same views on CPU and GPU). Each :class:`BatchedViews` keeps
its own stream: the global CPU RNG state is swapped for the object's own during
a call (``torch.random.fork_rng``), so augmentation and model randomness (masks,
dropout) do not shift each other, and ``state_dict()`` is the whole state to
save for an exact resume (the data module puts it in Lightning checkpoints).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from typing import Any

import kornia.augmentation as K
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor, nn

from lightly_graft.data.transforms import BYOL_VIEWS
from lightly_graft.data.view_presets import DIAGONAL_CROP_SCALE, PRESETS
from lightly_graft.errors import DataError, GraftError, did_you_mean, format_options

# lightly's BYOL colour jitter and grayscale (BYOLView1Transform's defaults).
CJ_PROB = 0.8
CJ = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
GRAYSCALE_PROB = 0.2
# PIL's ImageOps.solarize default threshold (lightly's RandomSolarization).
SOLARIZE_THRESHOLD = 128 / 255


def blur_kernel_size(max_sigma: float) -> int:
    """Odd kernel size covering +-3 sigma (kornia needs one; PIL has none)."""
    return 2 * math.ceil(3 * max_sigma) + 1


def _crop(
    size: int, min_scale: float, hflip_prob: float, resample: str = "bilinear"
) -> list[nn.Module]:
    return [
        K.RandomResizedCrop(
            (size, size),
            scale=(min_scale, 1.0),
            ratio=(3 / 4, 4 / 3),
            resample=resample,
            align_corners=False,
            # One affine warp for the whole batch; the default "slice" crops
            # and resizes sample by sample (1.5x slower for MAE's bicubic crop
            # at 28 px). The crops are upsampled either way (the decode made
            # every image input_size), so no antialiasing is lost.
            cropping_mode="resample",
        ),
        K.RandomHorizontalFlip(p=hflip_prob),
    ]


def _color(
    cj_strength: float = BYOL_VIEWS["cj_strength"],
    blur_prob: float = 0.0,
    blur_sigmas: Sequence[float] = BYOL_VIEWS["blur_sigmas"],
    solarize_prob: float = 0.0,
) -> list[nn.Module]:
    """Colour jitter (p 0.8), grayscale (p 0.2), then blur and solarize if asked."""
    color: list[nn.Module] = [
        K.ColorJitter(
            brightness=cj_strength * CJ["brightness"],
            contrast=cj_strength * CJ["contrast"],
            saturation=cj_strength * CJ["saturation"],
            hue=cj_strength * CJ["hue"],
            p=CJ_PROB,
        ),
        K.RandomGrayscale(p=GRAYSCALE_PROB),
    ]
    if blur_prob > 0:
        low, high = float(blur_sigmas[0]), float(blur_sigmas[1])
        color.append(
            K.RandomGaussianBlur(blur_kernel_size(high), (low, high), p=blur_prob)
        )
    if solarize_prob > 0:
        threshold = (SOLARIZE_THRESHOLD, SOLARIZE_THRESHOLD)
        color.append(
            K.RandomSolarize(
                thresholds=threshold, additions=(0.0, 0.0), p=solarize_prob
            )
        )
    return color


class BatchedViews(abc.ABC):
    """Makes a batch's views; holds the augmentation's random stream.

    Args:
        normalize: ``{"mean": [...], "std": [...]}`` or None.
        seed: Seeds the stream (:meth:`manual_seed` re-seeds it).
    """

    num_views: int = 2

    def __init__(self, normalize: dict[str, list[float]] | None, seed: int = 0) -> None:
        self.normalize = normalize
        self._mean: Tensor | None = None
        self._std: Tensor | None = None
        if normalize:
            self._mean = torch.tensor(normalize["mean"]).view(1, -1, 1, 1)
            self._std = torch.tensor(normalize["std"]).view(1, -1, 1, 1)
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    def manual_seed(self, seed: int) -> None:
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    def state_dict(self) -> dict[str, Tensor]:
        """The random stream's state (a CPU ByteTensor), for checkpoints."""
        return {"rng_state": self._rng_state.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng_state = state["rng_state"].clone()

    def __call__(self, images: Tensor) -> list[Tensor]:
        """(B, C, H, W) uint8, C = 1 or 3 -> list of (B, 3, size, size) float views."""
        if (
            images.dtype != torch.uint8
            or images.ndim != 4
            or images.shape[1] not in (1, 3)
        ):
            raise DataError(
                "batched views take a batch of decoded images, (B, 1 or 3, H, W) "
                f"uint8; got {tuple(images.shape)} {images.dtype}: give the dataset "
                "the decode transform (lightly_graft.data.decode_transform), or set "
                "data.augment.batched: false for per-image transforms"
            )
        x = images.float().div_(255).expand(-1, 3, -1, -1)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            views = self.views(x)
            self._rng_state = torch.get_rng_state()
        # A bicubic resize overshoots at sharp edges; PIL clamps its output to
        # 0..255, so the per-image views never leave [0, 1]: neither do these.
        return [self._normalize(v.clamp_(0.0, 1.0)) for v in views]

    @abc.abstractmethod
    def views(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) floats in [0, 1] -> the views, not yet normalised."""

    def _normalize(self, view: Tensor) -> Tensor:
        if self._mean is None or self._std is None:
            return view
        mean, std = self._mean.to(view.device), self._std.to(view.device)
        return (view - mean) / std


class IndependentViews(BatchedViews):
    """Each view its own pipeline on the whole image (BYOL, MAE, MTL).

    Args:
        pipelines: One list of kornia augmentations per view.
        normalize: ``{"mean", "std"}`` or None.
        seed: Seeds the random stream.
    """

    def __init__(
        self,
        pipelines: Sequence[Iterable[nn.Module]],
        normalize: dict[str, list[float]] | None,
        seed: int = 0,
    ) -> None:
        super().__init__(normalize, seed)
        self.pipelines = [nn.Sequential(*p) for p in pipelines]
        self.num_views = len(self.pipelines)

    def views(self, images: Tensor) -> list[Tensor]:
        return [pipeline(images) for pipeline in self.pipelines]


class SharedCropViews(BatchedViews):
    """Masked MoCo's ``light``: one crop + flip per image, colour-augmented twice
    (:class:`~lightly_graft.data.view_presets.SharedCropTransform`)."""

    #: Side of the one crop per image, as a multiple of ``input_size``.
    crop_scale = 1.0

    def __init__(
        self,
        input_size: int,
        min_scale: float,
        normalize: dict[str, list[float]] | None,
        seed: int = 0,
    ) -> None:
        super().__init__(normalize, seed)
        self.input_size = input_size
        self.crop_size = round(input_size * self.crop_scale)
        self.crop = nn.Sequential(*_crop(self.crop_size, min_scale, 0.5))
        self.color = nn.Sequential(*_color())

    def views(self, images: Tensor) -> list[Tensor]:
        crop = self.crop(images)
        return [self.color(crop), self.color(crop)]


class DiagonalCropViews(SharedCropViews):
    """Masked MoCo's ``medium``: two crops on the diagonal of one larger crop
    (:class:`~lightly_graft.data.view_presets.DiagonalCropTransform`): shift
    ``s`` uniform in 0..room and offset ``o`` uniform in 0..room - s, per image.

    The two integer-offset crops are a gather (per-sample slicing); kornia's
    box crops would resample through a warp for the same pixels.
    """

    crop_scale = DIAGONAL_CROP_SCALE

    def views(self, images: Tensor) -> list[Tensor]:
        big = self.crop(images)
        batch, room = big.shape[0], self.crop_size - self.input_size
        # shift uniform in 0..room; offset uniform in 0..room - shift (CPU draws)
        shift = torch.floor(torch.rand(batch) * (room + 1)).long()
        offset = torch.floor(torch.rand(batch) * (room - shift + 1)).long()
        first = _crop_at(big, offset.to(big.device), self.input_size)
        second = _crop_at(big, (offset + shift).to(big.device), self.input_size)
        return [self.color(first), self.color(second)]


def _crop_at(images: Tensor, corner: Tensor, size: int) -> Tensor:
    """(B, C, H, W), corners (B,) -> the (B, C, size, size) crops whose top-left
    pixel is (corner[b], corner[b])."""
    index = corner[:, None] + torch.arange(size, device=images.device)  # (B, size)
    rows = index[:, None, :, None].expand(-1, images.shape[1], -1, images.shape[3])
    picked = images.gather(2, rows)  # (B, C, size, W)
    cols = index[:, None, None, :].expand(-1, images.shape[1], size, -1)
    return picked.gather(3, cols)


# -- factories with the per-image transforms' signatures ------------------------
def mae_views(
    *, input_size: int, min_scale: float, normalize: dict[str, list[float]] | None
) -> IndependentViews:
    """MAE's view (lightly ``MAETransform``): bicubic random resized crop + flip."""
    return IndependentViews(
        [_crop(input_size, min_scale, 0.5, resample="bicubic")], normalize
    )


def _byol_pipelines(
    input_size: int,
    min_scale: float,
    cj_strength: float,
    blur_probs: Sequence[float],
    blur_sigmas: Sequence[float],
    solarize_prob: float,
    hflip_prob: float,
) -> list[list[nn.Module]]:
    return [
        _crop(input_size, min_scale, hflip_prob)
        + _color(cj_strength, blur_prob, blur_sigmas, solarize)
        for blur_prob, solarize in (
            (blur_probs[0], 0.0),
            (blur_probs[1], solarize_prob),
        )
    ]


def two_views(
    *,
    input_size: int,
    min_scale: float,
    normalize: dict[str, list[float]] | None,
    cj_strength: float = BYOL_VIEWS["cj_strength"],
    blur_probs: Sequence[float] = BYOL_VIEWS["blur_probs"],
    blur_sigmas: Sequence[float] = BYOL_VIEWS["blur_sigmas"],
    solarize_prob: float = BYOL_VIEWS["solarize_prob"],
    hflip_prob: float = BYOL_VIEWS["hflip_prob"],
) -> IndependentViews:
    """MoCo v3 / BYOL's asymmetric pair; arguments as
    :func:`lightly_graft.data.transforms.two_view_transform` (view 1: blur
    ``blur_probs[0]``, no solarize; view 2: blur ``blur_probs[1]``, solarize)."""
    return IndependentViews(
        _byol_pipelines(
            input_size,
            min_scale,
            cj_strength,
            blur_probs,
            blur_sigmas,
            solarize_prob,
            hflip_prob,
        ),
        normalize,
    )


def preset_views(
    *,
    input_size: int = 224,
    preset: str = "light",
    min_scale: float = 0.08,
    normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
) -> BatchedViews:
    """Masked MoCo §4.1's presets, as
    :func:`lightly_graft.data.view_presets.make_view_transform` (``strong`` =
    lightly's BYOL views with their own defaults: blur 1.0 / 0.1, solarize 0 / 0.2).

    Raises:
        GraftError: for an unknown preset.
    """
    if preset == "strong":
        return two_views(
            input_size=input_size, min_scale=min_scale, normalize=normalize
        )
    if preset == "medium":
        return DiagonalCropViews(input_size, min_scale, normalize)
    if preset == "light":
        return SharedCropViews(input_size, min_scale, normalize)
    raise GraftError(
        f"unknown augmentation preset '{preset}'{did_you_mean(preset, PRESETS)}; "
        f"valid presets: {format_options(PRESETS)}."
    )
