"""InfoNCE as in MoCo v3.

MoCo v3 (Chen et al., 2021) contrasts each query against the keys of all images in
the (global) batch: positives on the diagonal, no queue, no q-q negatives. This is
not lightly's ``NTXentLoss``, which is SimCLR's 2N-way loss with query-query
negatives, so it is written here.

Reference (moco-v3, main_moco/moco/builder.py):
https://github.com/facebookresearch/moco-v3/blob/main/moco/builder.py#L47-L62
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.utils import concat_all_gather
from lightly.utils import dist
from torch import Tensor


def infonce(
    query: Tensor,
    key: Tensor,
    temperature: float = 0.2,
    gather_distributed: bool = False,
) -> Tensor:
    """One direction of MoCo v3's loss: ``CE(q k^T / tau, labels) * 2 tau``.

    Args:
        query: Queries of shape (batch_size, dim), with gradient.
        key: Keys of shape (batch_size, dim); detached here (no gradient to keys).
        temperature: Softmax temperature tau (MoCo v3 ViT: 0.2).
        gather_distributed: If True and torch.distributed is initialised with more
            than one process, keys of all ranks are gathered and serve as
            negatives; the positives of this rank sit at offset ``rank *
            batch_size``. A no-op in one process.

    Returns:
        Scalar loss.
    """
    if query.shape != key.shape:
        raise ValueError(
            f"query and key must have the same shape, got {tuple(query.shape)} "
            f"and {tuple(key.shape)}."
        )
    query = F.normalize(query, dim=1)
    key = F.normalize(key.detach(), dim=1)
    offset = 0
    if gather_distributed and dist.world_size() > 1:
        key = concat_all_gather(key)
        offset = dist.rank() * query.shape[0]
    logits = query @ key.T / temperature  # (batch_size, world_size * batch_size)
    labels = torch.arange(query.shape[0], device=query.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


def symmetric_infonce(
    queries: tuple[Tensor, Tensor],
    keys: tuple[Tensor, Tensor],
    temperature: float = 0.2,
    gather_distributed: bool = False,
) -> Tensor:
    """MoCo v3's symmetric loss ``ctr(q1, k2) + ctr(q2, k1)``.

    Args:
        queries: (q1, q2), each (batch_size, dim): predictor outputs of both views.
        keys: (k1, k2), each (batch_size, dim): momentum-encoder outputs.
        temperature: Softmax temperature.
        gather_distributed: Gather keys across ranks (see :func:`infonce`).
    """
    q1, q2 = queries
    k1, k2 = keys
    return infonce(q1, k2, temperature, gather_distributed) + infonce(
        q2, k1, temperature, gather_distributed
    )
