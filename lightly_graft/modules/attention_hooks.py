"""Attention maps of timm ViT blocks, recomputed through forward hooks.

timm's ``Attention`` runs fused ``scaled_dot_product_attention`` and never builds
the attention matrix, and timm has no hook that returns it, so
:func:`attention_from_input` recomputes it from the block's (normed) input with the
block's own ``qkv`` projection, ``q_norm``/``k_norm``, ``num_heads`` and ``scale``,
and :func:`capture_attention` runs a model with forward hooks on every block's
``attn`` (timm is not modified). ccMIM's patch importance
(:func:`cls_attention_importance`) recomputes only the CLS query's row
(:func:`cls_attention_row`); why and how it matches the official code:
:mod:`lightly_graft.functional.importance`. The reductions of the maps (mean
attention distance) are tensor functions in
:mod:`lightly_graft.functional.attention`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules import MaskedVisionTransformerTIMM
from timm.layers import Attention
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


def cls_attention_row(attn: Attention, x: Tensor) -> Tensor:
    """The CLS query's softmax attention over all tokens, per head.

    The operations of ``timm.layers.Attention.forward`` (unfused branch) for
    query 0 only: the query and key slices of ``qkv`` (``[q; k; v]`` stacked on
    the output dimension, head-major within each), ``q_norm``/``k_norm``,
    ``scale``, softmax; no attention masks or dropout.

    Args:
        attn: A ``timm.layers.Attention``.
        x: (batch_size, num_tokens, dim) input of ``attn`` (the block's
            ``norm1`` output), CLS at token 0.

    Returns:
        (batch_size, num_heads, num_tokens) weights; each head's row sums to 1.
    """
    batch_size, num_tokens, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    width = heads * head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias

    def project(tokens: Tensor, part: int) -> Tensor:
        rows = slice(part * width, (part + 1) * width)
        out = F.linear(tokens, weight[rows], None if bias is None else bias[rows])
        return out.reshape(batch_size, -1, heads, head_dim).transpose(1, 2)

    q = attn.q_norm(project(x[:, :1], 0))  # (B, H, 1, hd)
    k = attn.k_norm(project(x, 1))  # (B, H, N, hd)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # (B, H, 1, N)
    return logits.softmax(dim=-1)[:, :, 0]


@torch.no_grad()
def cls_attention_importance(
    encoder: MaskedVisionTransformerTIMM, images: Tensor
) -> Tensor:
    """ccMIM patch importance: CLS->patch attention summed over all blocks.

    Runs one no-grad forward of the full images and, in every block, computes
    the CLS row of the attention map (:func:`cls_attention_row`, head-averaged,
    post-softmax; hooked in by
    :func:`capture_attention`), as the
    official ccMIM code does before choosing the mask.

    Args:
        encoder: The online ``MaskedVisionTransformerTIMM``.
        images: (batch_size, channels, height, width).

    Returns:
        (batch_size, num_patches) float32 importance of patch tokens 1..L (the
        CLS self-attention dropped), each in [0, depth].
    """
    rows: list[Tensor] = []

    def collect(block: int, row: Tensor) -> None:
        rows.append(row.float().mean(dim=1))  # (B, N)

    with capture_attention(encoder.vit.blocks, collect, cls_attention_row):
        encoder.encode(images)
    return torch.stack(rows).sum(dim=0)[:, 1:]
