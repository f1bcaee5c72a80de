"""MAE (He et al., 2022): step i of Layer Grafted Pre-training."""

from __future__ import annotations

from typing import Any

from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.transforms import MAETransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_graft import zoo
from lightly_graft.data.batched_views import IndependentViews, mae_views
from lightly_graft.data.transforms import mae_transform
from lightly_graft.methods.base import LossOutput, SSLMethod
from lightly_graft.modules.decoder import MAEDecoder
from lightly_graft.modules.masked_reconstruction import reconstruct_masked
from lightly_graft.modules.objectives import build_objective
from lightly_graft.training.optimizer import GraftedStageOptimizer


def make_transform(
    input_size: int = 224,
    min_scale: float = 0.2,
    normalize: dict[str, list[float]] | None = None,
) -> MAETransform:
    """MAE's augmentation: random resized crop + horizontal flip."""
    return mae_transform(
        input_size=input_size,
        min_scale=min_scale,
        normalize=normalize or IMAGENET_NORMALIZE,
    )


def make_batched_transform(
    input_size: int = 224,
    min_scale: float = 0.2,
    normalize: dict[str, list[float]] | None = None,
) -> IndependentViews:
    """:func:`make_transform`'s view made from a batch on its device (kornia)."""
    return mae_views(
        input_size=input_size,
        min_scale=min_scale,
        normalize=normalize or IMAGENET_NORMALIZE,
    )


#: Default transform (224 px), as in lightly's benchmark modules.
transform = make_transform()


def mae_decoder(
    vit: VisionTransformer,
    mask_ratio: float,
    decoder_dim: int,
    decoder_depth: int,
    decoder_num_heads: int,
) -> MAEDecoder:
    """MAE's decoder for the timm ``vit``, once ``mask_ratio`` is checked
    (:class:`MAE`, and MTL's MIM branch)."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}.")
    return MAEDecoder.for_encoder(vit, decoder_dim, decoder_depth, decoder_num_heads)


def random_mask(
    backbone: MaskedVisionTransformerTIMM,
    batch_size: int,
    mask_ratio: float,
    device: Any,
) -> tuple[Tensor, Tensor]:
    """lightly's random token mask: ``(idx_keep, idx_mask)`` token indices,
    CLS (index 0) always kept."""
    return utils.random_token_mask(
        size=(batch_size, backbone.sequence_length),
        mask_ratio=mask_ratio,
        device=device,
    )


@zoo.method("mae", recipe="recipes/quickstart.yaml")
class MAE(SSLMethod):
    """MAE masked image modelling (step i), lightly's masked ViT and decoder.

    Args:
        mask_ratio: Fraction of patches masked (0.75).
        decoder_dim: Decoder width (512).
        decoder_depth: Decoder blocks (8).
        decoder_num_heads: Decoder heads (16).
        norm_pix: Per-patch normalised pixel targets (MAE's ``norm_pix_loss``).
        **kwargs: :class:`~lightly_graft.methods.base.SSLMethod`'s
            (``batch_size_per_device``, ``num_classes``, ``backbone``,
            ``optimizer``: default AdamW, base LR 1.5e-4, betas (0.9, 0.95),
            wd 0.05, 40 warmup epochs, one LR for all blocks; ``grafting``).
    """

    num_views = 1

    def __init__(
        self,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.decoder = mae_decoder(
            self.backbone.vit, mask_ratio, decoder_dim, decoder_depth, decoder_num_heads
        )
        self.mask_ratio = mask_ratio
        self.norm_pix = norm_pix
        self.patch_size: int = self.backbone.vit.patch_embed.patch_size[0]
        self.objective = build_objective("mae", norm_pix=norm_pix)
        self.store_hparams()

    @classmethod
    def default_optimizer(cls) -> GraftedStageOptimizer:
        return GraftedStageOptimizer(
            base_lr=1.5e-4,
            num_stages=1,
            weight_decay=0.05,
            betas=(0.9, 0.95),
            warmup_epochs=40,
        )

    def mask(self, batch_size: int, device: Any) -> tuple[Tensor, Tensor]:
        """:func:`random_mask` with this method's ``mask_ratio``."""
        return random_mask(self.backbone, batch_size, self.mask_ratio, device)

    def reconstruction(
        self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Encodes the visible tokens, decodes, and returns ``(loss, x_encoded)``
        with ``x_encoded`` (batch_size, 1 + num_keep, embed_dim)."""
        prediction, target, x_encoded = reconstruct_masked(
            self.backbone, self.decoder, images, idx_keep, idx_mask
        )
        return self.objective(prediction, target), x_encoded

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        images = views[0]
        idx_keep, idx_mask = self.mask(images.shape[0], images.device)
        loss, x_encoded = self.reconstruction(images, idx_keep, idx_mask)
        return LossOutput(loss=loss, features=x_encoded[:, 0])
