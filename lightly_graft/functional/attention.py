"""Attention maps of timm ViT blocks and mean attention distance (Fig. 7).

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

timm's ``Attention`` runs fused ``scaled_dot_product_attention`` and never builds
the attention matrix, and timm has no hook that returns it, so
:func:`attention_from_input` recomputes it from the block's (normed) input with the
block's own ``qkv`` projection, ``q_norm``/``k_norm``, ``num_heads`` and ``scale``,
and :func:`capture_attention` runs a model with forward hooks on every block's
``attn`` (timm is not modified).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


def attention_from_input(attn: Attention, x: Tensor) -> Tensor:
    """Recomputes the softmax attention map of a timm ``Attention`` module.

    Same operations as ``timm.layers.Attention.forward`` (unfused branch) up to the
    softmax, without attention masks or dropout.

    Args:
        attn: A ``timm.layers.Attention`` (has ``qkv``, ``num_heads``,
            ``head_dim``, ``scale``, ``q_norm``, ``k_norm``).
        x: (batch_size, num_tokens, dim) input of ``attn`` (the block's
            ``norm1`` output).

    Returns:
        (batch_size, num_heads, num_tokens, num_tokens) attention weights; every
        row sums to 1.
    """
    batch_size, num_tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch_size, num_tokens, 3, attn.num_heads, attn.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    return logits.softmax(dim=-1)


AttentionCallback = Callable[[int, Tensor], None]
# (timm Attention, its (B, N, D) input) -> attention weights
AttentionFunction = Callable[[Attention, Tensor], Tensor]


@contextmanager
def capture_attention(
    blocks: Sequence[nn.Module],
    callback: AttentionCallback,
    attention: AttentionFunction = attention_from_input,
) -> Iterator[None]:
    """Within the context, calls ``callback(block_index, attention)`` per block.

    Forward hooks on every ``block.attn`` recompute the attention map
    (:func:`attention_from_input`) whenever the model runs; maps are handed to the
    callback one at a time so that a reduction (e.g. the mean distance) never holds
    all blocks' maps in memory. The hooks are removed on exit.

    Args:
        blocks: The ViT's blocks (``vit.blocks``), each with a timm ``Attention``
            as ``attn``.
        callback: Receives the block index and the
            (batch_size, num_heads, num_tokens, num_tokens) attention weights.
        attention: Computes the weights from the ``attn`` module and its input
            (default: the full map, :func:`attention_from_input`; ccMIM passes a
            CLS-row-only function).

    Raises:
        TypeError: A block has no timm-style ``attn`` module.
        ValueError: The model calls attention with a mask (not supported).
    """
    handles = []
    try:
        for index, block in enumerate(blocks):
            attn: Any = getattr(block, "attn", None)
            missing = [
                name
                for name in (
                    "qkv",
                    "num_heads",
                    "head_dim",
                    "scale",
                    "q_norm",
                    "k_norm",
                )
                if not hasattr(attn, name)
            ]
            if missing:
                raise TypeError(
                    f"block {index} ({type(block).__name__}) has no timm Attention "
                    f"as .attn (missing {missing}); attention maps need timm's "
                    f"VisionTransformer blocks."
                )
            handles.append(
                attn.register_forward_hook(
                    _make_hook(index, callback, attention), with_kwargs=True
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def _make_hook(
    index: int, callback: AttentionCallback, attention: AttentionFunction
) -> Callable[..., None]:
    def hook(module: Any, args: tuple, kwargs: dict, output: Tensor) -> None:
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal", False):
            raise ValueError(
                f"block {index} was called with an attention mask; attention maps "
                f"are only recomputed for unmasked self-attention."
            )
        x = args[0] if args else kwargs["x"]
        callback(index, attention(module, x))

    return hook


@torch.no_grad()
def attention_maps(vit: VisionTransformer, images: Tensor) -> list[Tensor]:
    """Attention maps of every block of a timm VisionTransformer.

    Holds all maps in memory: for large models or batches reduce per block with
    :func:`capture_attention` instead.

    Args:
        vit: A timm ``VisionTransformer`` (uses ``vit.blocks`` and
            ``vit.forward_features``).
        images: (batch_size, channels, height, width).

    Returns:
        One (batch_size, num_heads, num_tokens, num_tokens) tensor per block, in
        block order; tokens include the prefix tokens (CLS first).
    """
    maps: dict[int, Tensor] = {}

    def keep(index: int, attention: Tensor) -> None:
        maps[index] = attention

    blocks = list(vit.blocks)
    with capture_attention(blocks, keep):
        vit.forward_features(images)
    return [maps[i] for i in range(len(blocks))]


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
