"""MAE pixel reconstruction loss.

Reference (facebookresearch/mae, models_mae.py, ``forward_loss``):
https://github.com/facebookresearch/mae/blob/main/models_mae.py#L198-L222
"""

from __future__ import annotations

from torch import Tensor


def normalize_pixels(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalisation of MAE's ``norm_pix_loss``.

    Args:
        target: Patches of shape (batch_size, num_patches, patch_dim).
        eps: Added to the (unbiased) variance, as in MAE.

    Returns:
        ``(target - mean) / sqrt(var + eps)`` over the last dimension.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def mae_loss(
    prediction: Tensor, target: Tensor, norm_pix: bool = False, eps: float = 1e-6
) -> Tensor:
    """Mean squared error over the masked patches.

    Args:
        prediction: Predicted pixels of the masked patches, (batch_size,
            num_masked, patch_dim).
        target: True pixels of the same patches, same shape (from lightly's
            ``patchify`` and ``get_at_index``).
        norm_pix: Normalise each target patch by its mean and variance first.
        eps: Variance epsilon of the normalisation.

    Returns:
        Scalar loss, the mean over masked patches and pixels (MAE's
        ``(loss * mask).sum() / mask.sum()`` of the per-patch means).
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target "
            f"{tuple(target.shape)} must have the same shape."
        )
    if norm_pix:
        target = normalize_pixels(target, eps)
    return (prediction - target).pow(2).mean()
