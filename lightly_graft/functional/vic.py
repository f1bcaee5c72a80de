"""Variance, invariance and covariance statistics of features (VICReg, Fig. 6).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Section 3.4 and Fig. 6: "VIC
are computed on ViT-B/16 following Bardes et al. (2021). The input features are
first averaged over all tokens and then normalized to remove the effect of
magnitude." The three terms are those of VICReg (Bardes et al., 2022,
https://arxiv.org/abs/2105.04906), measured instead of penalised:

- features: the output tokens of one block, (batch_size, num_tokens, dim), are
  averaged over the tokens (:func:`token_average`), then each sample's vector is
  divided by its l2 norm (:func:`normalize_features`), so that only directions
  count, not the magnitude (which grows with depth in a ViT);
- variance (:func:`variance`): the standard deviation of every dimension over the
  batch, averaged over dimensions. It is 0 for collapsed features (every sample
  the same vector). VICReg's loss is ``mean(relu(1 - std))`` of this std;
- covariance (:func:`covariance`): the mean of the squared off-diagonal entries of
  the (batch_size - 1)-normalised covariance matrix, i.e.
  ``sum_{i != j} C_ij^2 / (dim * (dim - 1))``. VICReg's ``c(Z)`` divides the same
  sum by ``dim`` only; we divide by the number of off-diagonal entries so that the
  value does not grow with the width;
- invariance (:func:`invariance`): the mean squared error between the two views'
  features, over samples and dimensions (VICReg's ``s(Z, Z')``, lightly's
  ``invariance_loss``); 0 for identical views.

Variance and covariance are computed on each view and averaged over the two views.

lightly's ``lightly.loss.vicreg_loss`` has the loss terms (with the hinge and the
``/dim`` scaling) but not these statistics; the tests compare against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class VICStatistics:
    """Variance, invariance and covariance of one block's features (floats)."""

    variance: float
    invariance: float
    covariance: float


def token_average(tokens: Tensor) -> Tensor:
    """Averages a block's output over its tokens.

    Args:
        tokens: (batch_size, num_tokens, dim) block output (prefix tokens included
            or not, as the caller decides).

    Returns:
        (batch_size, dim) mean over the tokens.
    """
    if tokens.ndim != 3:
        raise ValueError(
            f"token_average takes (batch_size, num_tokens, dim), got shape "
            f"{tuple(tokens.shape)}."
        )
    return tokens.mean(dim=1)


def normalize_features(features: Tensor, eps: float = 1e-12) -> Tensor:
    """Divides each sample's feature vector by its l2 norm.

    Args:
        features: (batch_size, dim).
        eps: Lower bound on the norm (a zero vector stays zero).

    Returns:
        (batch_size, dim) unit-norm rows.
    """
    return F.normalize(features, dim=-1, eps=eps)


def variance(features: Tensor) -> Tensor:
    """Mean over dimensions of the per-dimension standard deviation over the batch.

    Args:
        features: (batch_size, dim), batch_size >= 2.

    Returns:
        Scalar tensor; 0 for collapsed features.
    """
    _check_batch(features)
    return features.std(dim=0, unbiased=True).mean()


def covariance(features: Tensor) -> Tensor:
    """Mean squared off-diagonal entry of the covariance matrix.

    Args:
        features: (batch_size, dim), batch_size >= 2, dim >= 2.

    Returns:
        Scalar tensor ``sum_{i != j} C_ij^2 / (dim * (dim - 1))`` with
        ``C = (Z - mean)^T (Z - mean) / (batch_size - 1)``.
    """
    _check_batch(features)
    batch_size, dim = features.shape
    if dim < 2:
        raise ValueError(f"covariance needs dim >= 2, got dim={dim}.")
    centered = features - features.mean(dim=0)
    cov = centered.T @ centered / (batch_size - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / (dim * (dim - 1))


def invariance(features_a: Tensor, features_b: Tensor) -> Tensor:
    """Mean squared error between two views' features.

    Args:
        features_a: (batch_size, dim), view a.
        features_b: (batch_size, dim), view b of the same images, same order.

    Returns:
        Scalar tensor; 0 for identical views.
    """
    if features_a.shape != features_b.shape:
        raise ValueError(
            f"invariance takes two views of the same shape, got "
            f"{tuple(features_a.shape)} and {tuple(features_b.shape)}."
        )
    return F.mse_loss(features_a, features_b)


def vic_statistics(
    features_a: Tensor, features_b: Tensor, *, normalize: bool = True
) -> VICStatistics:
    """Variance, invariance and covariance of two views' pooled features.

    Args:
        features_a: (batch_size, dim) token-averaged features of view a.
        features_b: (batch_size, dim) token-averaged features of view b.
        normalize: l2-normalise each sample's vector first (the paper's Fig. 6).

    Returns:
        The statistics; variance and covariance averaged over the two views.
    """
    features_a = features_a.double()
    features_b = features_b.double()
    if normalize:
        features_a = normalize_features(features_a)
        features_b = normalize_features(features_b)
    var = (variance(features_a) + variance(features_b)) / 2
    cov = (covariance(features_a) + covariance(features_b)) / 2
    inv = invariance(features_a, features_b)
    return VICStatistics(
        variance=var.item(), invariance=inv.item(), covariance=cov.item()
    )


def _check_batch(features: Tensor) -> None:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"expected features of shape (batch_size >= 2, dim), got "
            f"{tuple(features.shape)}."
        )
