"""Masked MoCo and Masked BYOL (papers/masked_moco_improved_baseline.md).

The online view's patch tokens are shuffled and split into n equal chunks, each
with the CLS token, and the chunks are encoded as independent sequences in one
batched forward (§3.2); the loss is averaged over the chunks (Eq. 3). The target
(momentum) encoder sees the full view, or m chunks whose keys are combined by
their spherical mean (§3.3, Eq. 4). Heads use LayerNorm by default (§3.4), the
augmentation presets are those of §4.1, and the von Mises-Fisher concentration
of each image's chunk representations is logged as a stability signal (§3.4).
Defaults n = 8, m = 1 (§3.5).

Everything else (momentum encoder, heads, momentum schedule, grafting hooks) is
:class:`~lightly_graft.methods.grafted_moco.GraftedMoCo`'s: with n = m = 1 this
is exactly its MoCo v3 step (tested).
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor, nn

from lightly_graft import zoo
from lightly_graft.data.batched_views import BatchedViews, preset_views
from lightly_graft.data.view_presets import ViewTransform, make_view_transform
from lightly_graft.functional.chunking import check_num_chunks, unflatten_chunks
from lightly_graft.functional.vmf import vmf_concentration
from lightly_graft.methods.base import LossOutput
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.modules.chunks import random_chunks
from lightly_graft.modules.heads import Norm
from lightly_graft.modules.objectives import Objective
from lightly_graft.modules.objectives.masked_contrastive import (
    MaskedContrastiveObjective,
)
from lightly_graft.training.optimizer import GraftedStageOptimizer


def make_transform(
    input_size: int = 224,
    preset: str = "light",
    min_scale: float = 0.08,
    normalize: dict[str, list[float]] | None = None,
) -> ViewTransform:
    """Two views with the §4.1 preset ``strong``, ``medium`` or ``light`` (best,
    the paper's ImageNet default, Table 8)."""
    return make_view_transform(
        input_size=input_size,
        preset=preset,
        min_scale=min_scale,
        normalize=normalize or IMAGENET_NORMALIZE,
    )


def make_batched_transform(
    input_size: int = 224,
    preset: str = "light",
    min_scale: float = 0.08,
    normalize: dict[str, list[float]] | None = None,
) -> BatchedViews:
    """:func:`make_transform`'s presets made from a batch on its device (kornia)."""
    return preset_views(
        input_size=input_size,
        preset=preset,
        min_scale=min_scale,
        normalize=normalize or IMAGENET_NORMALIZE,
    )


#: Default transform (224 px, light preset), as in lightly's benchmark modules.
transform = make_transform()


def _per_image_kappa(chunk_features: Tensor, num_chunks: int) -> Tensor:
    """(n * B, D) chunk-major -> mean over images of the vMF kappa of each
    image's n chunk representations."""
    per_image = unflatten_chunks(chunk_features.detach(), num_chunks).transpose(0, 1)
    return vmf_concentration(per_image).mean()


@zoo.method("masked_moco", recipe="recipes/masked_moco.yaml")
class MaskedMoCo(GraftedMoCo):
    """Masked MoCo (M-MoCo): MoCo v3 with n chunked online views.

    Args:
        num_chunks: n, online chunks per view (8); must divide the patch count.
        num_target_chunks: m, target chunks per view combined by spherical mean
            (1: the full view).
        drop_remainder: When n (or m) does not divide the patch count, give
            every chunk L // n patches and leave the L % n remaining (random)
            patches of each image out; False: such an n is an error. The paper
            runs n=8 on ViT-B/16 at 224 px (196 patches) without saying how; 8
            chunks of 24 with 4 patches left out is our reading.
        head_norm: ``layer`` (M-MoCo, §3.4) or ``batch`` (MoCo v3) in the heads.
        freeze_patch_embed: MoCo v3's frozen patch embedding; M-MoCo trains it
            (Table 1: "lifting the frozen PE restriction" helps).
        log_kappa: Log ``train/kappa`` (the "rep" layer of §3.4: the last
            block's patch tokens, mean-pooled, CLS excluded), ``train/kappa_proj``
            and ``train/kappa_pred``: the mean over images of the vMF kappa of
            each image's n chunk representations.
        **kwargs: :class:`~lightly_graft.methods.grafted_moco.GraftedMoCo`'s
            (heads, ``temperature``, ``objective``: the per-chunk two-view
            objective, momentum, ...) and the base's; ``optimizer`` default
            (§3.1, Table 8): AdamW, base LR 1.5e-4 x batch/256, betas (0.9,
            0.95), wd 0.1, 20 warmup epochs, one LR for all blocks.
    """

    def __init__(
        self,
        *,
        num_chunks: int = 8,
        num_target_chunks: int = 1,
        drop_remainder: bool = True,
        head_norm: Norm = "layer",
        freeze_patch_embed: bool = False,
        log_kappa: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            head_norm=head_norm, freeze_patch_embed=freeze_patch_embed, **kwargs
        )
        num_patches = self.backbone.vit.patch_embed.num_patches
        check_num_chunks(num_patches, num_chunks, drop_remainder)
        check_num_chunks(num_patches, num_target_chunks, drop_remainder)
        self.drop_remainder = drop_remainder
        self.num_chunks = num_chunks
        self.num_target_chunks = num_target_chunks
        self.log_kappa = log_kappa

    def make_objective(self, objective: nn.Module) -> nn.Module:
        """The two-view objective per chunk (Eq. 3, Eq. 4)."""
        assert isinstance(objective, Objective)
        return MaskedContrastiveObjective(base=objective)

    @classmethod
    def default_optimizer(cls) -> GraftedStageOptimizer:
        return GraftedStageOptimizer(
            base_lr=1.5e-4,
            num_stages=1,
            weight_decay=0.1,
            betas=(0.9, 0.95),
            warmup_epochs=20,
        )

    def chunk_queries(
        self, images: Tensor, with_logs: bool = True
    ) -> tuple[Tensor, dict[str, Tensor | float]]:
        """Online branch on n random chunks per image.

        Args:
            images: One view, (batch_size, 3, H, W).
            with_logs: Compute the kappa logs (``log_kappa`` must be on too).

        Returns:
            ``(queries, kappa logs)``: queries (n, batch_size, projection_dim)
            after the predictor; the logs are empty when n = 1, disabled or not
            asked for.
        """
        n = self.num_chunks
        # output of the last block, (n*B, 1 + L/n, D); the final norm acts per
        # token, so it is applied to the CLS tokens only
        tokens = random_chunks(
            self.backbone,
            images,
            n,
            final_norm=False,
            drop_remainder=self.drop_remainder,
        )
        projection = self.projector(self.backbone.vit.norm(tokens[:, 0]))
        prediction = self.predictor(projection)
        logs: dict[str, Tensor | float] = {}
        if with_logs and self.log_kappa and n > 1:
            with torch.no_grad():
                logs = {
                    "kappa": _per_image_kappa(tokens[:, 1:].mean(dim=1), n),
                    "kappa_proj": _per_image_kappa(projection, n),
                    "kappa_pred": _per_image_kappa(prediction, n),
                }
        return unflatten_chunks(prediction, n), logs

    @torch.no_grad()
    def chunk_keys(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Target branch: the full view (m = 1) or m random chunks.

        Returns:
            ``(keys, features)``: keys (m, batch_size, projection_dim) and the
            momentum encoder's CLS features (batch_size, embed_dim), averaged
            over the chunks when m > 1.
        """
        m = self.num_target_chunks
        if m == 1:
            features = self.backbone_momentum(images)
            return self.projector_momentum(features)[None], features
        cls = random_chunks(
            self.backbone_momentum, images, m, drop_remainder=self.drop_remainder
        )[:, 0]  # (m*B, D)
        keys = unflatten_chunks(self.projector_momentum(cls), m)
        return keys, unflatten_chunks(cls, m).mean(dim=0)

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        # Each view through the heads separately (BatchNorm statistics per view,
        # as in MoCo v3); the n chunks of a view share one batch.
        # kappa is logged for the first view only.
        first, logs = self.chunk_queries(views[0])
        second, _ = self.chunk_queries(views[1], with_logs=False)
        queries = [first, second]
        keys_features = [self.chunk_keys(view) for view in views[:2]]
        loss = self.objective(queries, [k for k, _ in keys_features])
        # The online classifier trains on the momentum encoder's full-view
        # features (computed for the keys anyway; the online encoder only sees
        # chunks). Validation uses the online encoder on full images.
        return LossOutput(loss=loss, features=keys_features[0][1], logs=logs)


@zoo.method("masked_byol", recipe="recipes/masked_byol.yaml")
class MaskedBYOL(MaskedMoCo):
    """Masked BYOL (M-BYOL): BYOL's loss on n=8 token chunks per view.

    :class:`MaskedMoCo` with BYOL's loss (negative
    cosine, no negatives) and no norm after the predictor's last layer (§3.1:
    "critical to remove the BN for the output fc of the predictor").

    lightly's ``NegativeCosineSimilarity`` (``-cos``) stands for Eq. 2's
    ``2 - 2 q.k``: the same minimiser, half the gradient scale.

    Args:
        objective: The per-chunk two-view objective (``byol``).
        predictor_last_norm: No norm after the predictor's last layer (§3.1).
        **kwargs: :class:`MaskedMoCo`'s (``temperature`` and
            ``gather_distributed`` are unused by BYOL's loss).
    """

    def __init__(
        self,
        *,
        objective: str = "byol",
        predictor_last_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            objective=objective, predictor_last_norm=predictor_last_norm, **kwargs
        )
