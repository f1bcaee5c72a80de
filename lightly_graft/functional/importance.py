"""ccMIM patch importance and importance-sampled masking.

ccMIM (papers/ccmim_contextual_mim.md, §3.2, Eq. 4-6) masks the patches the CLS
token attends to most, so that the visible set (low importance, background) has to
reconstruct the contextually rich masked set. Official code
(https://github.com/Sherrylone/ccMIM, ``models_ccmim.py::get_mask_idx``):

    avg_cls_attn = sum over blocks of head-averaged attention   # no-grad forward
    avg_cls_attn = softmax(avg_cls_attn) / softmax(torch.rand(N, L))
    order = argsort(avg_cls_attn)             # ascending
    visible = order[:, :int(L * (1 - mask_ratio))], masked = the rest

so the masked set holds the high-importance patches, and the uniform noise makes
it a sampling rather than a hard top-k (Table 5: "importance sampling" beats both
random and hard "importance" dividing).

Attention maps: timm's ``Attention`` uses fused ``scaled_dot_product_attention``
and never materialises the map.
:func:`~lightly_graft.modules.attention_hooks.cls_attention_importance`
recomputes only the CLS query's row
(:func:`~lightly_graft.modules.attention_hooks.cls_attention_row`) from each
block's own input
(captured by a forward hook on ``block.attn``, i.e. after ``norm1`` in a pre-norm
block) and that block's ``qkv`` weights: the CLS query and the keys, (B, H, N)
logits, instead of all queries, keys and the (B, H, N, N) map that
``modules.attention_hooks.attention_from_input`` builds for the analysis tools.
The row equals the full map's row 0 up to float rounding (tested), so the masks
are the same on seeded inputs except where two patches' scores tie to within
rounding (about 1e-7 relative), where the order of the tied pair may flip.

The official code reads the row too: ``basic_module.py`` returns
``avg_attn[:, 0, 1:]``, the *CLS query's* attention to the patch keys, as the
paper's Eq. 4 (``q_0 K_{1:}^T``), since commit 7350304 (its first upload,
536edd9, read the column ``avg_attn[:, 1:, 0]``). Both are head-averaged
post-softmax values summed over all blocks.

Index convention: lightly's ``random_token_mask``: token indices include the CLS
token at 0 (patches are 1..L); ``idx_keep`` starts with the CLS index,
``idx_mask`` holds patch indices only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.utils import random_token_mask
from torch import Tensor

from lightly_graft.errors import GraftError

__all__ = [
    "ccmim_token_mask",
    "importance_token_mask",
    "num_visible_patches",
]


def num_visible_patches(num_patches: int, mask_ratio: float) -> int:
    """int(L * (1 - mask_ratio)), as lightly's ``random_token_mask`` and ccMIM.

    Raises:
        GraftError: if either the visible or the masked set would be empty.
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    if not 0.0 < mask_ratio < 1.0 or not 0 < num_keep < num_patches:
        raise GraftError(
            f"mask_ratio={mask_ratio} leaves {num_keep} of {num_patches} patches "
            "visible; ccMIM needs both a visible and a masked set: use a ratio in "
            "(0, 1), e.g. 0.75 (the official default)."
        )
    return num_keep


def importance_token_mask(
    importance: Tensor, mask_ratio: float = 0.75
) -> tuple[Tensor, Tensor]:
    """Importance sampling of the masked set (ccMIM, official ``get_mask_idx``).

    Patches are ranked by ``softmax(importance) / softmax(u)``, u ~ U(0, 1) drawn
    with the global RNG; the lowest ``int(L * (1 - mask_ratio))`` are visible, the
    rest (the high-importance ones) masked.

    Args:
        importance: (batch_size, num_patches) patch scores, e.g. from
            :func:`~lightly_graft.modules.attention_hooks.cls_attention_importance`.
        mask_ratio: Fraction of patches in the masked set.

    Returns:
        ``(idx_keep, idx_mask)`` as lightly's ``random_token_mask``: idx_keep
        (batch_size, 1 + num_keep) with the CLS index 0 first, idx_mask
        (batch_size, num_patches - num_keep) with patch indices (1..L) only.
    """
    batch_size, num_patches = importance.shape
    num_keep = num_visible_patches(num_patches, mask_ratio)
    noise = torch.rand(batch_size, num_patches, device=importance.device)
    score = F.softmax(importance.float(), dim=1) / F.softmax(noise, dim=1)
    order = torch.argsort(score, dim=1) + 1  # ascending; token indices
    cls = torch.zeros(batch_size, 1, dtype=order.dtype, device=order.device)
    return torch.cat([cls, order[:, :num_keep]], dim=1), order[:, num_keep:]


def ccmim_token_mask(
    batch_size: int,
    num_patches: int,
    mask_ratio: float = 0.75,
    importance: Tensor | None = None,
    random_masking: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """ccMIM's visible/masked split: importance sampling, or plain random masking.

    Args:
        batch_size: B.
        num_patches: L, patch tokens per image (without CLS).
        mask_ratio: Fraction of patches in the masked set (official: 0.75).
        importance: (B, L) patch importance; required unless ``random_masking``.
        random_masking: Use lightly's ``random_token_mask`` (the official
            ``--random`` switch and the "random" row of Table 5).
        device: Device of the indices in the random case.

    Returns:
        ``(idx_keep, idx_mask)`` in lightly's convention (see
        :func:`importance_token_mask`).
    """
    if random_masking:
        num_visible_patches(num_patches, mask_ratio)
        return random_token_mask(
            (batch_size, num_patches + 1), mask_ratio=mask_ratio, device=device
        )
    if importance is None:
        raise GraftError("ccmim_token_mask needs `importance` unless random_masking")
    assert importance.shape == (batch_size, num_patches), importance.shape
    return importance_token_mask(importance, mask_ratio)
