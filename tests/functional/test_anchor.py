"""The anchor penalty against its equation, tensor by tensor."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from lightly_graft.functional.anchor import anchor_penalty, sum_of_distances


@pytest.mark.parametrize("p", [1, 2])
def test_anchor_penalty__equals_per_tensor_sum_and_its_gradient(p: int) -> None:
    # weight * sum_i ||theta_i - ref_i||_p^p (Layer Grafted A.5; p=1 official code)
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (7,), (2, 3, 5), (1,)]
    params = [torch.randn(s, generator=generator, requires_grad=True) for s in shapes]
    refs = [torch.randn(s, generator=generator) for s in shapes]
    expected = 0.3 * sum(
        ((a - b).abs() ** p).sum() for a, b in zip(params, refs, strict=True)
    )
    got = anchor_penalty(params, refs, 0.3, p)
    assert_close(got, expected, rtol=1e-6, atol=1e-6)
    got.backward()
    for param, ref in zip(params, refs, strict=True):
        diff = (param - ref).detach()
        grad = 0.3 * (diff.sign() if p == 1 else 2 * diff)
        assert_close(param.grad, grad, rtol=1e-6, atol=1e-6)
    flat = torch.cat([r.reshape(-1) for r in refs])  # the pre-flattened form
    assert_close(sum_of_distances(params, flat, p), got / 0.3, rtol=1e-6, atol=1e-6)
