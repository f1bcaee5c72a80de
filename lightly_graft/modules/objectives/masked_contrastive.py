"""Masked MoCo / Masked BYOL objective (``masked_contrastive``).

papers/masked_moco_improved_baseline.md, Eq. 3 and Eq. 4: every one of the n
chunk queries of a view is contrasted with the key of the other view, and the
loss is averaged over the chunks::

    L({q_i}, k) = 1/n sum_i L(q_i, k)                      (Eq. 3)

When the target view is itself split into m chunks, its m keys are combined into
their spherical mean ``k_hat = sum_j k_j / ||sum_j k_j||`` first (Eq. 4). ``L`` is
any registered two-view objective (``contrastive``: MoCo v3's symmetric InfoNCE;
``byol``: negative cosine), so n = m = 1 is exactly that objective. The keys
are the same for all n chunks, so the base prepares them once
(``prepare_targets``: for InfoNCE, normalise and, under DDP, all-gather: 2
collectives per step, not 2n).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lightly_graft.functional.chunking import spherical_mean
from lightly_graft.modules.objectives import (
    Objective,
    accepted_arguments,
    build_objective,
    register_objective,
)


@register_objective("masked_contrastive")
class MaskedContrastiveObjective(Objective):
    """Eq. 3 (chunk queries, loss averaged over chunks) + Eq. 4 (target chunks).

    ``forward(online, target)``: ``online[i]`` (n, batch_size, dim) are the n chunk
    queries of view i (after the predictor), ``target[i]`` (m, batch_size, dim)
    the m chunk keys of view i (m = 1: the full view). n and m come from the
    shapes. The base objective pairs the views as usual (MoCo v3:
    ``ctr(q1, k2) + ctr(q2, k1)`` for every chunk).

    Args:
        base: The two-view objective applied per chunk: a registered name
            (``contrastive``, ``byol``) or a built objective.
        temperature: InfoNCE tau, if the base is a name that takes one (MoCo
            v3: 0.2).
        gather_distributed: Gather keys across ranks, if the base is a name
            that supports it.
    """

    def __init__(
        self,
        base: str | Objective = "contrastive",
        temperature: float = 0.2,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(base, Objective):
            self.base = base
            return
        given = {"temperature": temperature, "gather_distributed": gather_distributed}
        accepted = accepted_arguments(base)
        self.base = build_objective(
            base, **{k: v for k, v in given.items() if k in accepted}
        )

    def forward(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        num_chunks = online[0].shape[0]
        assert all(q.shape[0] == num_chunks for q in online), "same n for every view"
        keys = [k[0] if k.shape[0] == 1 else spherical_mean(k, dim=0) for k in target]
        for q, k in zip(online, keys, strict=True):
            if q.shape[1:] != k.shape:
                raise ValueError(
                    f"chunk queries {tuple(q.shape)} do not match keys "
                    f"{tuple(k.shape)}: expected (n, batch_size, dim) and "
                    "(batch_size, dim)."
                )
        # the keys are the same for every chunk: normalise and gather them once
        # (2 collectives per step under DDP, not 2n)
        prepared = self.base.prepare_targets(keys)
        losses = [
            self.base.forward_prepared([q[c] for q in online], prepared)
            for c in range(num_chunks)
        ]
        return sum(losses[1:], losses[0]) / num_chunks
