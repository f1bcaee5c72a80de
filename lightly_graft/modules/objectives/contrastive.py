"""MoCo v3 InfoNCE objective (``contrastive``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lightly_graft.functional.contrastive import infonce_with_keys, prepare_keys
from lightly_graft.modules.objectives import Objective, register_objective


@register_objective("contrastive")
class ContrastiveObjective(Objective):
    """MoCo v3's symmetric InfoNCE: ``sum_{i != j} ctr(online[i], target[j])``,
    for two views ``ctr(q1, k2) + ctr(q2, k1)``; each term is scaled by 2 tau.

    Args:
        temperature: tau (MoCo v3 ViT: 0.2).
        gather_distributed: Gather keys across ranks (no-op in one process).
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        for q, k in zip(online, target, strict=True):
            if q.shape != k.shape:
                raise ValueError(
                    "query and key must have the same shape, got "
                    f"{tuple(q.shape)} and {tuple(k.shape)}."
                )
        return self.forward_prepared(online, self.prepare_targets(target))

    def prepare_targets(self, target: Sequence[Tensor]) -> list[tuple[Tensor, int]]:
        """Each view's keys normalised and gathered once (one collective per
        view under DDP with ``gather_distributed``)."""
        return [prepare_keys(k, self.gather_distributed) for k in target]

    def forward_prepared(
        self, online: Sequence[Tensor], prepared: Sequence[Any]
    ) -> Tensor:
        loss = [
            infonce_with_keys(q, keys, self.temperature)
            for i, q in enumerate(online)
            for j, keys in enumerate(prepared)
            if i != j
        ]
        return sum(loss[1:], loss[0])
