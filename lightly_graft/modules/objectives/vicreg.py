"""VICReg objective (``vicreg``): lightly's ``VICRegLoss``."""

from __future__ import annotations

from collections.abc import Sequence

from lightly.loss import VICRegLoss
from torch import Tensor

from lightly_graft.modules.objectives import Objective, register_objective


@register_objective("vicreg")
class VICRegObjective(Objective):
    """VICReg (Bardes et al., 2022), averaged over unordered view pairs; for two
    views exactly ``VICRegLoss(z1, z2)``. ``target`` is the same branch as
    ``online`` (no momentum encoder): pairs are ``(online[i], target[j])``,
    ``i < j``.

    Args:
        lambda_param: Invariance weight (25).
        mu_param: Variance weight (25).
        nu_param: Covariance weight (1).
        gather_distributed: Gather embeddings across ranks for the variance and
            covariance terms.
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = False,
    ):
        super().__init__()
        self.criterion = VICRegLoss(
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=nu_param,
            gather_distributed=gather_distributed,
        )

    def forward(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        losses = [
            self.criterion(online[i], target[j])
            for i in range(len(online))
            for j in range(i + 1, len(target))
        ]
        return sum(losses[1:], losses[0]) / len(losses)
