"""MAE pixel reconstruction objective (``mae``)."""

from __future__ import annotations

from torch import Tensor

from lightly_graft.functional.reconstruction import mae_loss
from lightly_graft.modules.objectives import Objective, register_objective


@register_objective("mae")
class MAEObjective(Objective):
    """MSE between predicted and true pixels of the masked patches.

    ``forward(prediction, target)``, both (batch_size, num_masked, patch_dim).

    Args:
        norm_pix: Normalise each target patch (MAE's ``norm_pix_loss``).
    """

    def __init__(self, norm_pix: bool = True) -> None:
        super().__init__()
        self.norm_pix = norm_pix

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return mae_loss(prediction, target, norm_pix=self.norm_pix)
