"""ccMIM: contrasting-aided contextual masked image modelling.

papers/ccmim_contextual_mim.md, §3.2, and the official code
(https://github.com/Sherrylone/ccMIM, ``models_ccmim.py``):

1. Importance: a no-grad forward of the full image; the CLS token's attention to
   the patches, head-averaged, summed over all blocks
   (``modules.attention_hooks.cls_attention_importance``).
2. Split: importance sampling with noise, ``softmax(a) / softmax(u)``; the masked
   set holds the high-importance patches, the lowest 25% are visible
   (``functional.importance.importance_token_mask``); ``random_masking=True``
   gives MAE's random split (lightly's ``random_token_mask``).
3. Reconstruction of the masked set from the encoded visible set through the MAE
   decoder (MAE's pixel loss), and InfoNCE (T = 0.5) between the projected CLS
   of the visible set and the stop-gradient projected CLS of the masked set
   (``objectives.ccmim``), ``L = L_rec + lambda * L_NCE`` with lambda 0.2
   (paper) or 0.1 (official code).

The encoder, decoder, reconstruction and optimizer defaults are
:class:`~lightly_graft.methods.mae.MAE`'s (decoder 512-d, 8 blocks, as in the
official code; the paper's text mentions a 2-block decoder).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightly_graft import zoo
from lightly_graft.functional.importance import ccmim_token_mask
from lightly_graft.methods.base import LossOutput
from lightly_graft.methods.mae import MAE, make_batched_transform, make_transform
from lightly_graft.modules.attention_hooks import cls_attention_importance
from lightly_graft.modules.heads import mlp_head
from lightly_graft.modules.masked_reconstruction import reconstruct_masked
from lightly_graft.modules.objectives.ccmim import CCMIMObjective

__all__ = ["CCMIM", "make_batched_transform", "make_transform", "transform"]

#: Default transform: MAE's random resized crop + flip (ccMIM §C: "only use the
#: random resized crop for augmentation"), 224 px.
transform = make_transform()


@zoo.method("ccmim", recipe="recipes/ccmim.yaml")
class CCMIM(MAE):
    """ccMIM: masks the patches the CLS attends to, + CLS contrast (MAE decoder).

    Args:
        projection_hidden_dim: Projector hidden width (None: the encoder width,
            as the official ``Linear(embed_dim, embed_dim)``).
        projection_dim: Projector output width (official: 256).
        contrast_weight: lambda of the InfoNCE term (paper 0.2; official 0.1).
        temperature: InfoNCE temperature (0.5).
        random_masking: Random split instead of importance sampling (Table 5
            "random"; the official ``--random`` flag).
        gather_distributed: Gather the masked-set keys across ranks (official).
        **kwargs: :class:`~lightly_graft.methods.mae.MAE`'s (``mask_ratio``:
            the fraction of patches in the masked set, the decoder,
            ``norm_pix``) and the base's; ``optimizer`` default: MAE's (ccMIM
            §C).
    """

    def __init__(
        self,
        *,
        projection_hidden_dim: int | None = None,
        projection_dim: int = 256,
        contrast_weight: float = 0.2,
        temperature: float = 0.5,
        random_masking: bool = False,
        gather_distributed: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.random_masking = random_masking
        # Official projector: Linear(no bias) -> BN -> ReLU -> Linear(no bias) ->
        # BN(affine=False); MoCo v3's head builder with 2 layers is exactly this.
        self.projector = mlp_head(
            self.embed_dim,
            projection_hidden_dim or self.embed_dim,
            projection_dim,
            num_layers=2,
            norm="batch",
        )
        # MAE's objective is replaced by ccMIM's (reconstruction + contrast).
        self.objective: CCMIMObjective = CCMIMObjective(
            contrast_weight=contrast_weight,
            temperature=temperature,
            norm_pix=self.norm_pix,
            gather_distributed=gather_distributed,
        )

    def mask(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Random split (``random_masking``); the importance split needs the
        images, see :meth:`split`."""
        return ccmim_token_mask(
            batch_size,
            self.backbone.vit.patch_embed.num_patches,
            self.mask_ratio,
            random_masking=True,
            device=device,
        )

    def split(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(idx_keep, idx_mask)``: visible tokens (CLS first) and masked
        patches, by importance sampling or at random."""
        if self.random_masking:
            return self.mask(images.shape[0], images.device)
        importance = cls_attention_importance(self.backbone, images)  # no grad
        return ccmim_token_mask(
            images.shape[0],
            importance.shape[1],
            self.mask_ratio,
            importance=importance,
        )

    def reconstruction(
        self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """MAE's contract: encodes the visible tokens, decodes the masked ones and
        returns ``(reconstruction loss, x_encoded (B, 1 + num_keep, D))``."""
        prediction, target, x_encoded = reconstruct_masked(
            self.backbone, self.decoder, images, idx_keep, idx_mask
        )
        return self.objective.reconstruction(prediction, target), x_encoded

    def masked_set_cls(self, images: Tensor, idx_mask: Tensor) -> Tensor:
        """Stop-gradient teacher: the projected CLS of the masked set (CLS
        prepended, as the official code), (batch_size, projection_dim)."""
        cls = torch.zeros_like(idx_mask[:, :1])
        with torch.no_grad():
            x_masked = self.backbone.encode(
                images, idx_keep=torch.cat([cls, idx_mask], dim=1)
            )
            return self.projector(x_masked[:, 0])

    def _terms(self, images: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        idx_keep, idx_mask = self.split(images)
        reconstruction, x_visible = self.reconstruction(images, idx_keep, idx_mask)
        visible = self.projector(x_visible[:, 0])
        masked = self.masked_set_cls(images, idx_mask)
        terms = {
            "reconstruction": reconstruction,
            "contrast": self.objective.contrast(visible, masked),
        }
        return terms, x_visible[:, 0]

    def loss_terms(self, views: list[Tensor]) -> dict[str, Tensor]:
        """Unweighted ``{"reconstruction", "contrast"}`` of a batch."""
        return self._terms(views[0])[0]

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        terms, features = self._terms(views[0])
        loss = self.objective.combine(terms)
        return LossOutput(loss=loss, features=features, logs=dict(terms))
