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
    return infonce_with_keys(query, prepare_keys(key, gather_distributed), temperature)


def prepare_keys(key: Tensor, gather_distributed: bool = False) -> tuple[Tensor, int]:
    """The key side of :func:`infonce`: detached, l2-normalised and, with
    ``gather_distributed`` in several processes, gathered from all ranks (one
    collective). Reuse it for several queries against the same keys (Masked
    MoCo's n chunks).

    Args:
        key: (batch_size, dim) keys of this rank.
        gather_distributed: See :func:`infonce`.

    Returns:
        ``(keys, offset)``: (world_size * batch_size, dim) normalised keys and
        the index of this rank's first key among them.
    """
    key = F.normalize(key.detach(), dim=1)
    if gather_distributed and dist.world_size() > 1:
        return concat_all_gather(key), dist.rank() * key.shape[0]
    return key, 0


def infonce_with_keys(
    query: Tensor, keys: tuple[Tensor, int], temperature: float = 0.2
) -> Tensor:
    """:func:`infonce` against keys from :func:`prepare_keys`.

    Args:
        query: (batch_size, dim) queries, with gradient.
        keys: ``(keys, offset)`` from :func:`prepare_keys`; query i's positive
            is ``keys[offset + i]``.
        temperature: Softmax temperature tau.
    """
    key, offset = keys
    query = F.normalize(query, dim=1)
    logits = query @ key.T / temperature  # (batch_size, world_size * batch_size)
    labels = torch.arange(query.shape[0], device=query.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)
