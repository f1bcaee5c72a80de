"""ccMIM objective (``ccmim``): reconstruction + CLS contrast (Eq. 9, 7, 10).

papers/ccmim_contextual_mim.md, §3.2: the decoder reconstructs the masked set
(the high-importance patches) from the encoded visible set (MAE's pixel loss,
Eq. 9), and an InfoNCE aligns the projected CLS token of the visible set with the
stop-gradient projected CLS token of the masked set (Eq. 7)::

    L = L_recons + lambda * L_NCE                           (Eq. 10)

Official code (https://github.com/Sherrylone/ccMIM, ``models_ccmim.py``
``forward_alignment_loss`` and ``engine_pretrain.py``)::

    logits = normalize(cls_vis) @ concat_all_gather(normalize(cls_mask)).T / T
    l_align = CrossEntropy(logits, labels) * (2 * T)        # T = 0.5
    loss = l_align * 0.1 + l_rec

i.e. MoCo v3's one-directional InfoNCE (``functional.contrastive.infonce``: keys
detached, scaled by 2T, gathered across ranks). Documented differences:

- lambda: the paper (§C, Fig. 2) uses 0.2; the official training loop 0.1. The
  default here is the paper's 0.2; set ``contrast_weight=0.1`` for the code's.
- Eq. 7 also has visible-visible negatives (SimCLR-style); the official code
  contrasts against the masked-set keys only. We follow the code.
"""

from __future__ import annotations

from torch import Tensor

from lightly_graft.functional.contrastive import infonce
from lightly_graft.functional.reconstruction import mae_loss
from lightly_graft.modules.objectives import Objective, register_objective


@register_objective("ccmim")
class CCMIMObjective(Objective):
    """``L_recons + contrast_weight * L_NCE``.

    ``forward(prediction, target, visible, masked)`` returns the weighted sum;
    ``reconstruction(prediction, target)`` and ``contrast(visible, masked)`` the
    unweighted parts and ``combine({"reconstruction": ..., "contrast": ...})`` their
    sum. ``prediction`` and ``target`` (batch_size, num_masked, patch_dim): decoded
    and true pixels of the masked set; ``visible`` and ``masked`` (batch_size,
    dim): projected CLS tokens of the visible and the masked set (``masked`` is
    detached here: the masked set is the teacher).

    Args:
        contrast_weight: lambda (paper: 0.2; official code: 0.1).
        temperature: InfoNCE temperature (official: 0.5).
        norm_pix: MAE's per-patch normalised pixel targets.
        gather_distributed: Gather the masked-set keys across ranks (official).
    """

    def __init__(
        self,
        contrast_weight: float = 0.2,
        temperature: float = 0.5,
        norm_pix: bool = True,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if contrast_weight < 0 or temperature <= 0:
            raise ValueError(
                f"need contrast_weight >= 0 and temperature > 0, got "
                f"{contrast_weight} and {temperature}."
            )
        self.contrast_weight = contrast_weight
        self.temperature = temperature
        self.norm_pix = norm_pix
        self.gather_distributed = gather_distributed

    def reconstruction(self, prediction: Tensor, target: Tensor) -> Tensor:
        """MAE's pixel loss on the masked set (Eq. 9)."""
        return mae_loss(prediction, target, norm_pix=self.norm_pix)

    def contrast(self, visible: Tensor, masked: Tensor) -> Tensor:
        """InfoNCE of the visible CLS against the detached masked CLS (Eq. 7)."""
        return infonce(
            visible, masked.detach(), self.temperature, self.gather_distributed
        )

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        return terms["reconstruction"] + self.contrast_weight * terms["contrast"]

    def forward(
        self, prediction: Tensor, target: Tensor, visible: Tensor, masked: Tensor
    ) -> Tensor:
        return self.combine(
            {
                "reconstruction": self.reconstruction(prediction, target),
                "contrast": self.contrast(visible, masked),
            }
        )
