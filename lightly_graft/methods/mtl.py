"""MTL: the multi-task combination of MIM and CL (Layer Grafted Pre-training §2.2).

papers/layer_grafted_pretraining.md, §2.2 and Table 1 ("MTL combination"): each
iteration computes the MoCo v3 loss on two augmented views and the MAE loss on a
minimally augmented view (random resized crop + flip); one shared encoder, the
two losses added. The paper uses it to show that the two objectives conflict
(Fig. 1: per-block gradient cosine): :meth:`MTL.loss_terms` returns the two
unweighted losses for the gradient-conflict tools.

The MoCo v3 branch is :class:`~lightly_graft.methods.grafted_moco.GraftedMoCo`
(momentum encoder, heads, schedule); the MIM branch is MAE's decoder, random
masking and pixel objective on the same online encoder.
"""

from __future__ import annotations

from typing import Any

from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor

from lightly_graft import zoo
from lightly_graft.data.batched_views import IndependentViews
from lightly_graft.methods import mae
from lightly_graft.methods.base import LossOutput
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.methods.transforms import two_batched_views, two_view_transform
from lightly_graft.modules.masked_reconstruction import reconstruct_masked
from lightly_graft.modules.objectives import build_objective
from lightly_graft.training.optimizer import GraftedStageOptimizer


def make_transform(
    input_size: int = 224,
    min_scale: float = 0.08,
    mae_min_scale: float = 0.2,
    normalize: dict[str, list[float]] | None = None,
    **kwargs: Any,
) -> MultiViewTransform:
    """Three views: MoCo v3's two (lightly's BYOL views; extra keyword arguments
    go to them) and MAE's minimal one (random resized crop + flip), in this
    order."""
    normalize = normalize or IMAGENET_NORMALIZE
    cl = two_view_transform(
        input_size=input_size, min_scale=min_scale, normalize=normalize, **kwargs
    )
    mim = mae.make_transform(
        input_size=input_size, min_scale=mae_min_scale, normalize=normalize
    )
    return MultiViewTransform(transforms=[*cl.transforms, mim.transform])


def make_batched_transform(
    input_size: int = 224,
    min_scale: float = 0.08,
    mae_min_scale: float = 0.2,
    normalize: dict[str, list[float]] | None = None,
    **kwargs: Any,
) -> IndependentViews:
    """:func:`make_transform`'s three views, in the same order, made from a
    batch on its device (kornia)."""
    normalize = normalize or IMAGENET_NORMALIZE
    cl = two_batched_views(
        input_size=input_size, min_scale=min_scale, normalize=normalize, **kwargs
    )
    mim = mae.make_batched_transform(
        input_size=input_size, min_scale=mae_min_scale, normalize=normalize
    )
    return IndependentViews([*cl.pipelines, *mim.pipelines], normalize)


#: Default transform (224 px), as in lightly's benchmark modules.
transform = make_transform()


@zoo.method("mtl", recipe="recipes/mtl.yaml")
class MTL(GraftedMoCo):
    """MTL ablation (Table 1): ``mim_weight * L_MAE + cl_weight * L_MoCo``.

    Views: ``views[0]``, ``views[1]`` the two contrastive views, ``views[2]``
    the minimally augmented MIM view (:func:`make_transform`).

    Args:
        mask_ratio: MAE mask ratio (0.75).
        decoder_dim: MAE decoder width (512).
        decoder_depth: MAE decoder blocks (8).
        decoder_num_heads: MAE decoder heads (16).
        norm_pix: MAE's per-patch normalised pixel targets.
        freeze_patch_embed: Off by default: the MIM loss trains the patch
            embedding (MAE does).
        mim_weight: Weight of the MAE loss (1: the paper's plain sum).
        cl_weight: Weight of the MoCo v3 loss (1).
        **kwargs: :class:`~lightly_graft.methods.grafted_moco.GraftedMoCo`'s
            (MoCo v3's heads, ``temperature``, momentum, ...) and the base's;
            ``optimizer`` default: AdamW, base LR 1.5e-4 x batch/256 for every
            block, wd 0.1, 40 warmup epochs (MoCo v3's ViT settings; the paper
            gives no MTL-specific ones).
    """

    num_views = 3

    def __init__(
        self,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix: bool = True,
        freeze_patch_embed: bool = False,
        mim_weight: float = 1.0,
        cl_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(freeze_patch_embed=freeze_patch_embed, **kwargs)
        self.decoder = mae.mae_decoder(
            self.backbone.vit, mask_ratio, decoder_dim, decoder_depth, decoder_num_heads
        )
        self.mask_ratio = mask_ratio
        self.mim_weight = mim_weight
        self.cl_weight = cl_weight
        self.mim_objective = build_objective("mae", norm_pix=norm_pix)

    @classmethod
    def default_optimizer(cls) -> GraftedStageOptimizer:
        return GraftedStageOptimizer(
            base_lr=1.5e-4,
            num_stages=1,
            weight_decay=0.1,
            betas=(0.9, 0.999),
            warmup_epochs=40,
        )

    def mim_loss(self, images: Tensor) -> Tensor:
        """MAE on the online encoder: random mask, decode, pixel loss."""
        idx_keep, idx_mask = mae.random_mask(
            self.backbone, images.shape[0], self.mask_ratio, images.device
        )
        prediction, target, _ = reconstruct_masked(
            self.backbone, self.decoder, images, idx_keep, idx_mask
        )
        loss: Tensor = self.mim_objective(prediction, target)
        return loss

    def _terms(self, views: list[Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        if len(views) < 3:
            raise ValueError(
                f"MTL takes 3 views (2 contrastive + 1 MIM), got {len(views)}: use "
                "lightly_graft.methods.mtl.make_transform."
            )
        cl = super().training_loss(views[:2])
        assert cl.features is not None
        return {"mim": self.mim_loss(views[2]), "cl": cl.loss}, cl.features

    def loss_terms(self, views: list[Tensor]) -> dict[str, Tensor]:
        """The unweighted ``{"mim": L_MAE, "cl": L_MoCo}`` (gradient conflict)."""
        return self._terms(views)[0]

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        terms, features = self._terms(views)
        loss = self.mim_weight * terms["mim"] + self.cl_weight * terms["cl"]
        return LossOutput(loss=loss, features=features, logs=dict(terms))
