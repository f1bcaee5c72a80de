"""Encode the visible tokens, decode the masked ones, and gather their pixels.

The MIM forward shared by MAE, ccMIM and MTL: lightly's masked ViT encodes the tokens of
``idx_keep``, the MAE decoder predicts the tokens of ``idx_mask``, and lightly's
``patchify`` / ``get_at_index`` give the true pixels of those patches.
"""

from __future__ import annotations

from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerTIMM
from torch import Tensor

from lightly_graft.modules.decoder import MAEDecoder


def reconstruct_masked(
    encoder: MaskedVisionTransformerTIMM,
    decoder: MAEDecoder,
    images: Tensor,
    idx_keep: Tensor,
    idx_mask: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """MAE forward on a given split.

    Args:
        encoder: lightly's masked ViT.
        decoder: The MAE decoder.
        images: (batch_size, C, H, W).
        idx_keep: (batch_size, 1 + num_keep) visible token indices, CLS (0) first.
        idx_mask: (batch_size, num_mask) masked token indices (patches 1..L).

    Returns:
        ``(prediction, target, x_encoded)``: predicted and true pixels of the
        masked patches, (batch_size, num_mask, patch_size**2 * C) each, and the
        encoded visible tokens (batch_size, 1 + num_keep, embed_dim).
    """
    x_encoded = encoder.encode(images, idx_keep=idx_keep)
    prediction = decoder(x_encoded, idx_keep, idx_mask)
    patch_size = encoder.vit.patch_embed.patch_size[0]
    patches = utils.patchify(images, patch_size)  # (B, L, p*p*C)
    target = utils.get_at_index(patches, idx_mask - 1)  # idx_mask counts the CLS
    return prediction, target, x_encoded
