from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from lightly_graft.functional.contrastive import infonce
from lightly_graft.modules.objectives import build_objective


class _MoCoV3Reference(nn.Module):
    """moco-v3's loss, pasted from
    https://github.com/facebookresearch/moco-v3/blob/c349e6e24f40d3fedb22d973f92defa4cedf37a7/moco/builder.py#L63-L73
    (MoCo.contrastive_loss)
    with the distributed gather removed (one process: rank 0)."""

    def __init__(self, T: float):
        super().__init__()
        self.T = T

    def contrastive_loss(self, q, k):
        q = nn.functional.normalize(q, dim=1)
        k = nn.functional.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / self.T
        N = logits.shape[0]
        labels = torch.arange(N, dtype=torch.long)
        return nn.CrossEntropyLoss()(logits, labels) * (2 * self.T)


@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
def test_infonce__matches_moco_v3_reference(temperature: float) -> None:
    torch.manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(16, 32) for _ in range(4))
    reference = _MoCoV3Reference(temperature)
    expected = reference.contrastive_loss(q1, k2) + reference.contrastive_loss(q2, k1)
    actual = infonce(q1, k2, temperature) + infonce(q2, k1, temperature)
    assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    objective = build_objective("contrastive", temperature=temperature)
    assert_close(objective([q1, q2], [k1, k2]), expected, rtol=1e-6, atol=1e-6)


def test_infonce__gradient_only_through_queries() -> None:
    torch.manual_seed(1)
    query = torch.randn(8, 16, requires_grad=True)
    key = torch.randn(8, 16, requires_grad=True)
    infonce(query, key).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert key.grad is None


def test_infonce__gather_flag_is_noop_in_one_process() -> None:
    torch.manual_seed(2)
    query, key = torch.randn(8, 16), torch.randn(8, 16)
    assert_close(infonce(query, key, gather_distributed=True), infonce(query, key))


def test_infonce__perfect_alignment_is_low() -> None:
    key = torch.eye(8)
    aligned = infonce(key * 10, key, temperature=0.1)
    shuffled = infonce(key.roll(1, dims=0), key, temperature=0.1)
    assert aligned < 0.01 < shuffled


def test_infonce__shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        infonce(torch.randn(4, 8), torch.randn(4, 7))
