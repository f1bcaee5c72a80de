"""Encoding Masked MoCo chunks as independent sequences in one batched forward.

``encoder(images.repeat(n, 1, 1, 1), idx_keep=idx_keep)`` (lightly's own path)
would patch-embed every image n times. :func:`encode_chunks` patch-embeds once
with lightly's ``preprocess`` (patch embedding, CLS token, position embedding),
gathers the chunk sequences (``functional.chunking.gather_chunks``) and runs the
encoder's own ``norm_pre``, blocks and final ``norm`` on the (n * B) short
sequences: the same tokens (tested), with 1/n of the patch-embedding FLOPs.
(lightly's wrapper has no entry point that starts from tokens, hence this
function; it touches only timm's public ``norm_pre``, ``blocks`` and ``norm``.)
"""

from __future__ import annotations

from lightly.models.modules import MaskedVisionTransformerTIMM
from torch import Tensor

from lightly_graft.functional.chunking import chunk_token_indices, gather_chunks


def encode_chunks(
    encoder: MaskedVisionTransformerTIMM,
    images: Tensor,
    idx_keep: Tensor,
    final_norm: bool = True,
) -> Tensor:
    """Encodes chunk sequences of the images.

    Args:
        encoder: lightly's masked ViT.
        images: (batch_size, C, H, W).
        idx_keep: (n * batch_size, 1 + L / n) chunk-major token indices with the
            CLS index first (``functional.chunking.chunk_token_indices``).
        final_norm: Apply the encoder's final norm (False: the output of the
            last block; the norm acts per token, so a caller may apply
            ``encoder.vit.norm`` to the CLS token alone).

    Returns:
        (n * batch_size, 1 + L / n, embed_dim) tokens; row ``c * batch_size + b``
        is chunk c of image b, its CLS token at index 0.
    """
    tokens = gather_chunks(encoder.preprocess(images), idx_keep)
    tokens = encoder.vit.norm_pre(tokens)
    out: Tensor = encoder.vit.blocks(tokens)
    return encoder.vit.norm(out) if final_norm else out


def random_chunks(
    encoder: MaskedVisionTransformerTIMM,
    images: Tensor,
    num_chunks: int,
    final_norm: bool = True,
    drop_remainder: bool = False,
) -> Tensor:
    """:func:`encode_chunks` of a fresh random partition into ``num_chunks``
    (``drop_remainder``: see ``functional.chunking.chunk_token_indices``).

    Returns:
        (num_chunks * batch_size, 1 + L // num_chunks, embed_dim), chunk-major.
    """
    idx_keep = chunk_token_indices(
        images.shape[0],
        encoder.vit.patch_embed.num_patches,
        num_chunks,
        device=images.device,
        drop_remainder=drop_remainder,
    )
    return encode_chunks(encoder, images, idx_keep, final_norm=final_norm)
