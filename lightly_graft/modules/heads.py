"""Projection, prediction and expander heads.

Built on lightly's ``ProjectionHead`` (a list of (in, out, norm, activation)
blocks). lightly's ``MoCoProjectionHead`` puts an affine BatchNorm after the last
layer and ``BYOLPredictionHead`` none, while MoCo v3 ends both MLPs with a
non-affine BatchNorm; Masked MoCo uses LayerNorm in their place. Hence this
small builder.
"""

from __future__ import annotations

from typing import Any, Literal

from lightly.models.modules.heads import BarlowTwinsProjectionHead, ProjectionHead
from torch import nn

Norm = Literal["batch", "layer", "none"]
NORMS = ("batch", "layer", "none")


def _norm(kind: Norm, dim: int, affine: bool) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm1d(dim, affine=affine)
    if kind == "layer":
        return nn.LayerNorm(dim, elementwise_affine=affine)
    if kind == "none":
        return None
    raise ValueError(f"norm must be one of {NORMS}, got '{kind}'.")


def mlp_head(
    input_dim: int,
    hidden_dim: int,
    output_dim: int,
    num_layers: int,
    norm: Norm = "batch",
    last_norm: bool = True,
) -> ProjectionHead:
    """MoCo v3 style MLP: hidden layers Linear -> norm -> ReLU, last layer Linear
    -> non-affine norm (if ``last_norm``).

    MoCo v3: projector ``mlp_head(d, 4096, 256, 3)``, predictor
    ``mlp_head(256, 4096, 256, 2)``. Linear layers followed by a norm have no
    bias, as in MoCo v3.

    Input (batch_size, input_dim) -> output (batch_size, output_dim).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
    blocks: list[Any] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        blocks.append((dim, hidden_dim, _norm(norm, hidden_dim, True), nn.ReLU()))
        dim = hidden_dim
    last = _norm(norm, output_dim, affine=False) if last_norm else None
    blocks.append((dim, output_dim, last, None))
    return ProjectionHead(blocks)


def vicreg_expander(
    input_dim: int, hidden_dim: int = 8192, output_dim: int = 8192
) -> ProjectionHead:
    """VICReg's expander: three Linear layers, BatchNorm + ReLU after the first
    two (lightly's Barlow Twins head is exactly this)."""
    return BarlowTwinsProjectionHead(input_dim, hidden_dim, output_dim)
