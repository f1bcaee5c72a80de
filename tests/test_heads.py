from __future__ import annotations

import torch
from torch import nn

from lightly_graft.modules.heads import mlp_head


def _layers(head: nn.Module) -> list[type]:
    return [type(m) for m in head.layers]


def test_mlp_head__moco_v3_projector_structure() -> None:
    head = mlp_head(32, 64, 16, num_layers=3, norm="batch")
    assert _layers(head) == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
    ]
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert all(m.bias is None for m in linears)  # followed by BN: no bias
    assert not head.layers[-1].affine  # MoCo v3: last BN without affine


def test_mlp_head__layer_norm_option() -> None:
    head = mlp_head(32, 64, 16, num_layers=2, norm="layer")
    assert _layers(head) == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm]
    assert not head.layers[-1].elementwise_affine
    assert head(torch.randn(3, 32)).shape == (3, 16)
