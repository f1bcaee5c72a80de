from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightly_graft.functional.gradients import (
    block_parameters,
    flat_gradient_dot_and_norms,
    per_block_gradient_cosine,
)


def _two_block_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def _blocks(model: nn.Sequential) -> dict[int, list[nn.Parameter]]:
    return {0: list(model[0].parameters()), 1: list(model[2].parameters())}


def test_per_block_gradient_cosine__identical_losses_give_one() -> None:
    model = _two_block_model()
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    cosines = per_block_gradient_cosine(loss, loss * 1.0, _blocks(model))
    assert list(cosines) == [0, 1]
    for value in cosines.values():
        assert value == pytest.approx(1.0, abs=1e-12)


def test_per_block_gradient_cosine__negated_loss_gives_minus_one() -> None:
    model = _two_block_model()
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    cosines = per_block_gradient_cosine(loss, -3.0 * loss, _blocks(model))
    for value in cosines.values():
        assert value == pytest.approx(-1.0, abs=1e-12)


def test_per_block_gradient_cosine__hand_checked() -> None:
    # loss_a = w . x with x = (1, 0): grad_w = (1, 0); loss_b = w . y with
    # y = (1, 1): grad_w = (1, 1); cos = 1 / sqrt(2). Block 1 (v): loss_a = v^2 at
    # v = 2 -> grad 4, loss_b = -v -> grad -1: cos = -1. Block 2 (u) only in
    # loss_b: no direction for loss_a -> nan.
    w = torch.tensor([0.3, -0.7], requires_grad=True)
    v = torch.tensor(2.0, requires_grad=True)
    u = torch.tensor(1.0, requires_grad=True)
    loss_a = w @ torch.tensor([1.0, 0.0]) + v**2
    loss_b = w @ torch.tensor([1.0, 1.0]) - v + 5 * u
    cosines = per_block_gradient_cosine(loss_a, loss_b, {0: [w], 1: [v], 2: [u]})
    assert cosines[0] == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert cosines[1] == pytest.approx(-1.0, abs=1e-12)
    assert math.isnan(cosines[2])


def test_per_block_gradient_cosine__matches_flattened_reference() -> None:
    model = _two_block_model()
    x = torch.randn(8, 4)
    out = model(x)
    loss_a, loss_b = out[:, 0].mean(), out[:, 1:].pow(2).sum()
    blocks = _blocks(model)
    cosines = per_block_gradient_cosine(loss_a, loss_b, blocks, retain_graph=True)
    for index, params in blocks.items():
        grad_a = torch.cat(
            [
                g.flatten()
                for g in torch.autograd.grad(loss_a, params, retain_graph=True)
            ]
        )
        grad_b = torch.cat(
            [
                g.flatten()
                for g in torch.autograd.grad(loss_b, params, retain_graph=True)
            ]
        )
        expected = torch.nn.functional.cosine_similarity(grad_a, grad_b, dim=0)
        assert cosines[index] == pytest.approx(expected.item(), abs=1e-6)


def test_per_block_gradient_cosine__leaves_grad_untouched() -> None:
    model = _two_block_model()
    loss = model(torch.randn(8, 4)).sum()
    per_block_gradient_cosine(loss, loss, _blocks(model))
    assert all(p.grad is None for p in model.parameters())


def test_per_block_gradient_cosine__partly_unused_parameter_counts_as_zero() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    loss_a = w.sum() + 2 * b  # grads (1, 1), 2
    loss_b = w.sum()  # grads (1, 1), unused b -> 0
    cosines = per_block_gradient_cosine(loss_a, loss_b, {0: [w, b]})
    assert cosines[0] == pytest.approx(2 / (math.sqrt(6) * math.sqrt(2)), abs=1e-12)


def test_per_block_gradient_cosine__rejects_non_scalar_loss() -> None:
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        per_block_gradient_cosine(w * 2, w.sum(), {0: [w]})


def test_flat_gradient_dot_and_norms__none_is_zero() -> None:
    dot, norm_a, norm_b = flat_gradient_dot_and_norms(
        [torch.tensor([3.0, 4.0]), None], [None, torch.tensor([1.0])]
    )
    assert (dot, norm_a, norm_b) == (0.0, 5.0, 1.0)


def test_block_parameters__skips_frozen_and_gives_nan_for_frozen_block() -> None:
    model = _two_block_model()
    model[0].weight.requires_grad_(False)
    blocks = block_parameters([model[0], model[1], model[2]])
    assert blocks[0] == [model[0].bias]
    assert blocks[1] == []
    loss = model(torch.randn(4, 4)).sum()
    cosines = per_block_gradient_cosine(loss, loss, blocks)
    assert cosines[0] == pytest.approx(1.0)
    assert math.isnan(cosines[1])
