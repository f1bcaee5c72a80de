"""The MAE decoder: embed -> lightly's ``MaskedVisionTransformerDecoderTIMM`` ->
pixel prediction.

lightly's decoder owns the mask token, the fixed sin-cos position embedding, the
blocks and the norm, and leaves the input embedding and the prediction layer to
the method (lightly's ``MAEDecoderTIMM``, which had them, is deprecated).
"""

from __future__ import annotations

from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


class MAEDecoder(nn.Module):
    """Predicts the pixels of masked patches from the encoded visible tokens.

    Args:
        num_patches: Patches per image.
        patch_size: Patch side in pixels.
        in_chans: Image channels.
        embed_dim: Encoder width.
        decoder_dim: Decoder width (MAE: 512).
        decoder_depth: Decoder blocks (MAE: 8).
        decoder_num_heads: Decoder heads (MAE: 16).
        num_prefix_tokens: Class/register tokens of the encoder (1).
    """

    def __init__(
        self,
        num_patches: int,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=num_patches,
            embed_dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            num_prefix_tokens=num_prefix_tokens,
        )
        self.prediction = nn.Linear(decoder_dim, patch_size**2 * in_chans)

    @classmethod
    def for_encoder(
        cls,
        vit: VisionTransformer,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
    ) -> MAEDecoder:
        """The decoder that fits a timm ``VisionTransformer`` encoder (its patch
        grid, patch size, channels, width and prefix tokens)."""
        patch_embed = vit.patch_embed
        return cls(
            num_patches=patch_embed.num_patches,
            patch_size=patch_embed.patch_size[0],
            in_chans=patch_embed.proj.in_channels,
            embed_dim=vit.embed_dim,
            decoder_dim=decoder_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
        )

    def forward(self, x_encoded: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Decodes and predicts the masked patches.

        Args:
            x_encoded: Encoded visible tokens (batch_size, num_keep, embed_dim),
                in the order of ``idx_keep`` (CLS first).
            idx_keep: (batch_size, num_keep) token indices (CLS = 0) of the
                visible tokens.
            idx_mask: (batch_size, num_mask) token indices of the masked tokens.

        Returns:
            Predicted pixels (batch_size, num_mask, patch_size**2 * in_chans), in
            the order of ``idx_mask``.
        """
        batch_size = x_encoded.shape[0]
        tokens = self.embed(x_encoded)
        full = utils.repeat_token(
            self.decoder.mask_token, (batch_size, self.decoder.sequence_length)
        )
        full = utils.set_at_index(full, idx_keep, tokens.type_as(full))
        decoded = self.decoder.decode(self.decoder.add_pos_embed(full))
        return self.prediction(utils.get_at_index(decoded, idx_mask))
