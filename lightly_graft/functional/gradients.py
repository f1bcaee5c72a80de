"""Per-block cosine similarity between the gradients of two losses (Eq. 3).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Section 2.2, Eq. 3, following
gradient surgery (Yu et al., 2020, https://arxiv.org/abs/2001.06782):

    C_MIM,CL(x) = <grad_theta L_MIM(x), grad_theta L_CL(x)>
                  / (||grad_theta L_MIM(x)|| * ||grad_theta L_CL(x)||)

where theta are the parameters of one ViT block and x is one batch. The paper's
Fig. 1 shows the distribution of this cosine over batches, per block.

Neither lightly nor timm has a per-parameter-group gradient cosine, hence this file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

#: The two loss terms compared by default: the ``mtl`` method's MIM and CL losses.
DEFAULT_TERMS: tuple[str, str] = ("mim", "cl")


def flat_gradient_dot_and_norms(
    grads_a: Sequence[Tensor | None], grads_b: Sequence[Tensor | None]
) -> tuple[float, float, float]:
    """Dot product and norms of two gradients given as lists of per-parameter tensors.

    A ``None`` entry (the loss does not reach that parameter) counts as a zero
    gradient. Sums are accumulated in float64.

    Args:
        grads_a: Gradients of loss a, one tensor (any shape) or None per parameter.
        grads_b: Gradients of loss b, same parameters in the same order.

    Returns:
        (dot, norm_a, norm_b) of the flattened, concatenated gradients.
    """
    assert len(grads_a) == len(grads_b)
    dots: list[Tensor] = []
    squares_a: list[Tensor] = []
    squares_b: list[Tensor] = []
    for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
        if grad_a is not None:
            squares_a.append(grad_a.double().pow(2).sum())
        if grad_b is not None:
            squares_b.append(grad_b.double().pow(2).sum())
        if grad_a is not None and grad_b is not None:
            dots.append((grad_a.double() * grad_b.double()).sum())
    dot = _total(dots)
    return dot, math.sqrt(_total(squares_a)), math.sqrt(_total(squares_b))


def _total(values: list[Tensor]) -> float:
    return torch.stack(values).sum().item() if values else 0.0


def per_block_gradient_cosine(
    loss_a: Tensor,
    loss_b: Tensor,
    params_by_block: Mapping[int, Sequence[Tensor]],
    *,
    retain_graph: bool = False,
) -> dict[int, float]:
    """Cosine between the gradients of two scalar losses, per block (Eq. 3).

    The gradients are taken with ``torch.autograd.grad``: nothing is written to the
    parameters' ``.grad`` attributes and no optimizer state is touched.

    A block that one of the losses does not reach (every parameter of the block is
    unused by that loss, or its gradient is exactly zero) has no direction, so its
    cosine is undefined: it is reported as ``nan``. Callers aggregating over
    batches should drop NaNs (``math.isnan``). Inside a block, a single parameter
    that only one loss reaches contributes zero to the dot product and its gradient
    to that loss's norm (its gradient from the other loss is zero).

    Args:
        loss_a: Scalar loss, e.g. the MIM loss.
        loss_b: Scalar loss, e.g. the CL loss; shares (part of) the graph of loss_a.
        params_by_block: Block index -> parameters of that block (requires_grad).
        retain_graph: Keep the graph after the second gradient (e.g. to call
            ``backward`` on the losses afterwards).

    Returns:
        Block index -> cosine in [-1, 1] (or nan), in the order of params_by_block.
    """
    if loss_a.ndim != 0 or loss_b.ndim != 0:
        raise ValueError(
            f"per_block_gradient_cosine takes scalar losses, got shapes "
            f"{tuple(loss_a.shape)} and {tuple(loss_b.shape)}: reduce them first."
        )
    blocks = list(params_by_block)
    params = [p for block in blocks for p in params_by_block[block]]
    if not params:
        return {block: math.nan for block in blocks}
    grads_a = torch.autograd.grad(loss_a, params, retain_graph=True, allow_unused=True)
    grads_b = torch.autograd.grad(
        loss_b, params, retain_graph=retain_graph, allow_unused=True
    )
    cosines: dict[int, float] = {}
    start = 0
    for block in blocks:
        end = start + len(params_by_block[block])
        dot, norm_a, norm_b = flat_gradient_dot_and_norms(
            grads_a[start:end], grads_b[start:end]
        )
        start = end
        if norm_a == 0.0 or norm_b == 0.0:
            cosines[block] = math.nan
        else:
            # Rounding can push |cos| a hair above 1 for parallel gradients.
            cosines[block] = max(-1.0, min(1.0, dot / (norm_a * norm_b)))
    return cosines


def terms_gradient_cosine(
    losses: Mapping[str, Tensor],
    terms: tuple[str, str],
    params_by_block: Mapping[int, Sequence[Tensor]],
    *,
    owner: str = "loss_terms",
    fix: str = "pass two of those names as terms",
) -> dict[int, float]:
    """:func:`per_block_gradient_cosine` of two named entries of ``losses``.

    Args:
        losses: Loss name -> scalar loss (a method's ``loss_terms(views)``).
        terms: The two names to compare.
        params_by_block: As :func:`per_block_gradient_cosine`.
        owner, fix: Who returned ``losses`` and how to choose other ``terms``,
            for the error.

    Raises:
        KeyError: ``losses`` lacks one of ``terms``.
    """
    missing = [name for name in terms if name not in losses]
    if missing:
        raise KeyError(f"{owner} returned {sorted(losses)}, not {missing}: {fix}.")
    return per_block_gradient_cosine(
        losses[terms[0]], losses[terms[1]], params_by_block
    )


def block_parameters(blocks: Sequence[nn.Module]) -> dict[int, list[Tensor]]:
    """Groups the trainable parameters of a ViT's blocks by block index.

    Grouping by module (``vit.blocks[i]``) rather than by parameter name cannot
    confuse encoder blocks with, e.g., a decoder's ``blocks.i``. Frozen parameters
    are left out (they have no gradient); a fully frozen block gets an empty list
    and so a NaN cosine.

    Args:
        blocks: The blocks, e.g. ``vit.blocks`` of a timm VisionTransformer.

    Returns:
        Block index (0 = lowest) -> its parameters with ``requires_grad``.
    """
    return {
        index: [p for p in block.parameters() if p.requires_grad]
        for index, block in enumerate(blocks)
    }
