"""BYOL negative cosine objective (``byol``)."""

from __future__ import annotations

from collections.abc import Sequence

from lightly.loss import NegativeCosineSimilarity
from torch import Tensor

from lightly_graft.modules.objectives import Objective, register_objective


@register_objective("byol")
class BYOLObjective(Objective):
    """Negative cosine similarity between each online prediction and the target
    of every other view (detached), averaged over ordered pairs; for two views
    ``0.5 * (ncs(p1, z2) + ncs(p2, z1))`` as in lightly's BYOL examples."""

    def __init__(self) -> None:
        super().__init__()
        self.criterion = NegativeCosineSimilarity()

    def forward(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        losses = [
            self.criterion(p, z.detach())
            for i, p in enumerate(online)
            for j, z in enumerate(target)
            if i != j
        ]
        return sum(losses[1:], losses[0]) / len(losses)
