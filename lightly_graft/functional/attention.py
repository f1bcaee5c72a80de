"""Mean attention distance of attention maps (Fig. 7).

Mean attention distance (Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929,
Fig. 7 right; used by Layer Grafted Pre-training, appendix A.1, Fig. 7): for one
head and one query patch, the attention-weighted mean of the pixel distances between
the query patch's centre and every key patch's centre; averaged over query patches
and images. It is the "receptive field size" of a head.

Prefix tokens (CLS, registers) are excluded: they have no position in the image.
By default (``renormalize=False``) we drop their rows and columns and keep the
remaining weights as they are, as the paper's own code does
(``eval_attn_dist.py`` in VITA-Group/layerGraftedPretraining_ICLR23, commit
f1862e1, ``attn[:, :, 1:, 1:]`` into ``compute_mean_attention_dist``; likewise
probing-vits): attention a query sends to CLS counts as distance 0, so a head
that attends mostly to CLS looks local. ``renormalize=True`` rescales each query's
weights over the patches to sum to 1 instead, which measures where the rest of
the attention goes. On near-uniform maps the kept value is the renormalised one
times the share of attention on patches (random maps of a 4 x 4 grid of 16 px
patches: 30.1 px kept vs 32.0 px renormalised); heads that attend much to CLS
differ much more.

The maps themselves are recomputed from timm blocks by forward hooks in
:mod:`lightly_graft.modules.attention_hooks`; this module only reduces them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def patch_distance_matrix(
    grid_size: tuple[int, int],
    patch_size: tuple[int, int],
    *,
    device: torch.device | None = None,
) -> Tensor:
    """Euclidean pixel distances between patch centres.

    Patches are numbered row-major, as timm's patch embedding flattens them.

    Args:
        grid_size: (rows, cols) of the patch grid.
        patch_size: (height, width) of a patch in pixels.

    Returns:
        (rows * cols, rows * cols) distances in pixels (float64).
    """
    rows, cols = grid_size
    rr, cc = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64, device=device),
        torch.arange(cols, dtype=torch.float64, device=device),
        indexing="ij",
    )
    centres = torch.stack(
        [(rr.flatten() + 0.5) * patch_size[0], (cc.flatten() + 0.5) * patch_size[1]],
        dim=-1,
    )
    return torch.cdist(centres, centres)


def uniform_attention_distance(
    grid_size: tuple[int, int], patch_size: tuple[int, int]
) -> float:
    """Mean attention distance of a head that attends uniformly to all patches.

    The mean pixel distance between two patch centres (pairs with itself
    included): a reference line for attention distance plots.
    """
    return patch_distance_matrix(grid_size, patch_size).mean().item()


def mean_attention_distance(
    attention: Tensor,
    *,
    grid_size: tuple[int, int],
    patch_size: tuple[int, int],
    num_prefix_tokens: int = 1,
    renormalize: bool = False,
) -> Tensor:
    """Mean attention distance in pixels per head (Dosovitskiy et al., Fig. 7).

    Args:
        attention: (batch_size, num_heads, num_tokens, num_tokens) attention
            weights, prefix tokens first, then the patches row-major.
        grid_size: (rows, cols) of the patch grid; rows * cols patch tokens.
        patch_size: (height, width) of a patch in pixels.
        num_prefix_tokens: Leading tokens without a position (CLS, registers),
            dropped as queries and keys.
        renormalize: Rescale each query's weights over patches to sum to 1
            (default: keep them as they are, as the paper's code does).

    Returns:
        (num_heads,) distance averaged over query patches and images (float64).
    """
    num_patches = grid_size[0] * grid_size[1]
    if attention.ndim != 4 or attention.shape[-1] != num_prefix_tokens + num_patches:
        raise ValueError(
            f"expected attention of shape (batch_size, num_heads, {num_prefix_tokens}"
            f" + {num_patches}, {num_prefix_tokens} + {num_patches}) for a "
            f"{grid_size} grid, got {tuple(attention.shape)}."
        )
    weights = attention[..., num_prefix_tokens:, num_prefix_tokens:].double()
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    distances = patch_distance_matrix(grid_size, patch_size, device=weights.device)
    per_query = (weights * distances).sum(dim=-1)  # (batch_size, num_heads, patches)
    return per_query.mean(dim=(0, 2))
