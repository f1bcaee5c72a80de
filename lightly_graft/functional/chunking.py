"""Masked MoCo chunk split and spherical mean.

Masked MoCo (papers/masked_moco_improved_baseline.md, §3.2-3.3) shuffles the N
patch tokens of a view, slices them into n equal chunks, appends the CLS token to
each chunk and encodes the chunks "as independent images". The target side may do
the same with m chunks whose keys are combined by their spherical mean (Eq. 4).

Index convention (the one of lightly's ``random_token_mask`` and
``MaskedVisionTransformerTIMM``): token indices include the CLS token at index 0,
the patch tokens are 1..L. All chunk tensors are **chunk-major**: row ``c * B + b``
holds chunk ``c`` of image ``b``. This is the order of ``images.repeat(n, 1, 1, 1)``,
so ``backbone(images.repeat(n, 1, 1, 1), idx_keep=idx_keep)`` encodes every chunk
as its own sequence in one batched forward. :func:`gather_chunks` gives the same
tokens from a single ``backbone.preprocess(images)`` call, which patch-embeds each
image once instead of n times (the patch embedding is about 1/12 of a ViT-B
block's FLOPs, so n=8 repeated embeddings would eat a third of the saving the
paper reports).

lightly has random masking (``random_token_mask``) but no partition of all patch
tokens into equal chunks, hence this file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_graft.errors import GraftError


def check_num_chunks(
    num_patches: int, num_chunks: int, drop_remainder: bool = False
) -> int:
    """Returns the number of patch tokens per chunk, L // n.

    Args:
        num_patches: L, the number of patch tokens of one image (no CLS).
        num_chunks: n, the number of chunks.
        drop_remainder: Allow L % n != 0 (the remainder is left out).

    Raises:
        GraftError: if n < 1, n > L, or L is not divisible by n and
            ``drop_remainder`` is False.
    """
    if num_chunks < 1 or num_chunks > num_patches:
        raise GraftError(
            f"num_chunks={num_chunks} must be between 1 and the number of patch "
            f"tokens ({num_patches}); Masked MoCo uses n=8 by default."
        )
    if num_patches % num_chunks != 0 and not drop_remainder:
        divisors = [d for d in range(1, num_patches + 1) if num_patches % d == 0]
        raise GraftError(
            f"num_chunks={num_chunks} does not divide the {num_patches} patch tokens "
            f"of an image into equal chunks; pick one of {divisors}, change "
            "img_size / patch_size, or set drop_remainder=True to leave "
            f"{num_patches % num_chunks} random patches out of every image."
        )
    return num_patches // num_chunks


def chunk_token_indices(
    batch_size: int,
    num_patches: int,
    num_chunks: int,
    device: torch.device | str | None = None,
    drop_remainder: bool = False,
) -> Tensor:
    """Random partition of each image's patch tokens into n chunks, CLS in each.

    For every image the L patch indices (1..L) are shuffled with ``torch.rand``
    (global RNG, as lightly's ``random_token_mask``) and sliced into n chunks of
    L // n. Within a chunk the indices are sorted, so n=1 gives exactly the full
    sequence ``[0, 1, ..., L]``.

    Args:
        batch_size: B.
        num_patches: L, patch tokens per image (without CLS).
        num_chunks: n; must divide L unless ``drop_remainder``.
        device: Device of the returned indices.
        drop_remainder: When L % n != 0, leave the last L % n shuffled patches
            (random ones) of each image out, so that the chunks stay equal (one
            batched forward needs equal lengths). ViT-B/16 at 224 px has 196
            patches: n=8 gives 8 chunks of 24, 4 patches left out.

    Returns:
        idx_keep of shape (n * B, 1 + L // n), chunk-major (row ``c * B + b`` is
        chunk c of image b), column 0 the CLS index 0. Over the n rows of one
        image every patch index appears at most once, and exactly once when n
        divides L.
    """
    chunk_len = check_num_chunks(num_patches, num_chunks, drop_remainder)
    noise = torch.rand(batch_size, num_patches, device=device)
    perm = torch.argsort(noise, dim=1)[:, : num_chunks * chunk_len] + 1  # (B, n*l)
    chunks = perm.reshape(batch_size, num_chunks, chunk_len).transpose(0, 1)
    chunks = chunks.reshape(num_chunks * batch_size, chunk_len)  # (n*B, L//n)
    chunks = torch.sort(chunks, dim=1).values
    cls = torch.zeros(num_chunks * batch_size, 1, dtype=chunks.dtype, device=device)
    return torch.cat([cls, chunks], dim=1)


def gather_chunks(tokens: Tensor, idx_keep: Tensor) -> Tensor:
    """Gathers chunk sequences from the tokens of the full images.

    Args:
        tokens: (B, 1 + L, D) tokens with position embedding, e.g. from
            ``MaskedVisionTransformerTIMM.preprocess(images)``.
        idx_keep: (n * B, 1 + L / n) chunk-major indices from
            :func:`chunk_token_indices`.

    Returns:
        (n * B, 1 + L / n, D): the tokens of ``preprocess(images.repeat(n, 1, 1,
        1), idx_keep=idx_keep)``, computed with one patch embedding per image.
    """
    num_rows = idx_keep.shape[0]
    batch_size, _, dim = tokens.shape
    assert num_rows % batch_size == 0, (num_rows, tokens.shape)
    n = num_rows // batch_size
    # lightly's get_at_index would need the tokens repeated n times in memory
    # (n x B x (1 + L) x D); gathering from an expanded view reads the same rows.
    source = tokens.unsqueeze(0).expand(n, -1, -1, -1)  # (n, B, 1 + L, D)
    index = idx_keep.view(n, batch_size, -1, 1).expand(-1, -1, -1, dim)
    return torch.gather(source, 2, index).view(num_rows, -1, dim)


def unflatten_chunks(x: Tensor, num_chunks: int) -> Tensor:
    """Chunk-major (n * B, ...) -> (n, B, ...)."""
    assert x.shape[0] % num_chunks == 0, (x.shape, num_chunks)
    return x.view(num_chunks, x.shape[0] // num_chunks, *x.shape[1:])


def spherical_mean(vectors: Tensor, dim: int = 0, eps: float = 1e-12) -> Tensor:
    """Spherical mean of m vectors: the normalised sum of the unit vectors (Eq. 4).

    ``k_hat = sum_i k_i / ||sum_i k_i||_2`` with each ``k_i`` first normalised to a
    unit vector (the keys of Eq. 1 are unit vectors; for unit inputs this is a
    no-op).

    Args:
        vectors: (..., m, ..., D) with the m vectors along ``dim`` and the feature
            dimension last, e.g. (m, B, D) from :func:`unflatten_chunks`.
        dim: The dimension holding the m vectors (not the last one).
        eps: Lower bound on the norms, as in ``F.normalize``.

    Returns:
        The unit-norm spherical mean, ``vectors`` with ``dim`` removed, e.g. (B, D).
    """
    assert dim % vectors.dim() != vectors.dim() - 1, "dim must not be the feature dim"
    total = F.normalize(vectors, dim=-1, eps=eps).sum(dim=dim)
    return F.normalize(total, dim=-1, eps=eps)
