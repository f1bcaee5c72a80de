"""Variance, invariance and covariance statistics of features (VICReg, Fig. 6).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Section 3.4 and Fig. 6: "VIC
are computed on ViT-B/16 following Bardes et al. (2021). The input features are
first averaged over all tokens and then normalized to remove the effect of
magnitude." The three terms are those of VICReg (Bardes et al., 2022,
https://arxiv.org/abs/2105.04906), measured instead of penalised. The features of
one block are its output tokens, (batch_size, num_tokens, dim), averaged over the
tokens (:func:`token_average`).

Two definitions (``VIC_DEFINITIONS``), chosen by ``definition=``:

- ``"paper"`` (the default): the paper's own code, ``evaluate_VIC`` in
  VITA-Group/layerGraftedPretraining_ICLR23 ``utils/pretrain.py`` (commit
  f1862e1). Invariance is the mean squared error between the two views'
  l2-normalised features (:func:`normalize_features`, :func:`invariance`). For
  variance and covariance the features are first centred over the batch and then
  l2-normalised again (:func:`center_and_normalize`); variance is
  ``mean_d sqrt(var_d + 1e-4)`` (:func:`variance` with ``eps=PAPER_VARIANCE_EPS``,
  so collapsed features give ``sqrt(1e-4) = 0.01``, not 0), covariance the *sum*
  of the squared off-diagonal entries of ``Z^T Z / (batch_size - 1)`` taken on
  those centred-then-normalised rows without centring them again
  (:func:`covariance_sum`; VICReg's ``c(Z)`` times ``dim``). On unit rows,
  isotropic features give a variance of about ``1 / sqrt(dim)`` and independent
  dimensions a covariance sum of about ``1 / (batch_size - 1)``, its
  finite-sample floor (measured: 0.145 and 0.016 at dim 48, batch 64): compare
  models at one width and one batch size.
- ``"per_entry"``: per-entry means on the l2-normalised (uncentred) features:
  variance ``mean_d std_d`` (0 for collapsed features), covariance the mean of
  the squared off-diagonal entries of the covariance matrix,
  ``sum_{i != j} C_ij^2 / (dim * (dim - 1))`` (:func:`covariance`), so that it
  does not grow with the width. On features that share a large common mean (as
  deep ViT blocks' do) the row normalisation shrinks the spread around that mean,
  so these values are much smaller than the paper's and curves can differ in
  shape.

Variance and covariance are computed on each view and averaged over the two
views in both definitions.

lightly's ``lightly.loss.vicreg_loss`` has the loss terms (with the hinge and the
``/dim`` scaling) but not these statistics; the tests compare against it and
against the official ``evaluate_VIC``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

VIC_DEFINITIONS = ("paper", "per_entry")
PAPER_VARIANCE_EPS = 1e-4  # inside the square root, as in the official evaluate_VIC


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


def center_and_normalize(features: Tensor, eps: float = 1e-12) -> Tensor:
    """Subtracts the batch mean, then divides each row by its l2 norm.

    The preprocessing of variance and covariance in the paper's ``evaluate_VIC``.

    Args:
        features: (batch_size, dim).
        eps: Lower bound on the norm (a row equal to the mean stays zero).

    Returns:
        (batch_size, dim) unit-norm rows (zero rows where a sample is the mean).
    """
    return normalize_features(features - features.mean(dim=0), eps=eps)


def variance(features: Tensor, eps: float = 0.0) -> Tensor:
    """Mean over dimensions of the per-dimension standard deviation over the batch.

    Args:
        features: (batch_size, dim), batch_size >= 2.
        eps: Added to the (unbiased) variance inside the square root; the paper's
            code uses ``PAPER_VARIANCE_EPS``.

    Returns:
        Scalar tensor ``mean_d sqrt(var_d + eps)``; ``sqrt(eps)`` for collapsed
        features.
    """
    _check_batch(features)
    return torch.sqrt(features.var(dim=0, unbiased=True) + eps).mean()


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


def covariance_sum(features: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of ``Z^T Z / (batch_size - 1)``.

    The paper's covariance term: ``Z`` is used as given, not centred again (the
    official code centres the features before the row normalisation of
    :func:`center_and_normalize`, whose output has a small non-zero mean).

    Args:
        features: (batch_size, dim), batch_size >= 2, dim >= 2.

    Returns:
        Scalar tensor ``sum_{i != j} M_ij^2`` with ``M = Z^T Z / (batch_size - 1)``.
    """
    _check_batch(features)
    batch_size, dim = features.shape
    if dim < 2:
        raise ValueError(f"covariance_sum needs dim >= 2, got dim={dim}.")
    moment = features.T @ features / (batch_size - 1)
    return moment.pow(2).sum() - torch.diagonal(moment).pow(2).sum()


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
    features_a: Tensor,
    features_b: Tensor,
    *,
    definition: str = "paper",
    normalize: bool = True,
) -> VICStatistics:
    """Variance, invariance and covariance of two views' pooled features.

    Args:
        features_a: (batch_size, dim) token-averaged features of view a.
        features_b: (batch_size, dim) token-averaged features of view b.
        definition: ``"paper"`` (the official ``evaluate_VIC``) or
            ``"per_entry"``; see the module docstring.
        normalize: Apply the definition's l2 normalisations (the paper's Fig. 6
            does); False measures the raw (for ``"paper"``: centred) features.

    Returns:
        The statistics; variance and covariance averaged over the two views.

    Raises:
        ValueError: Unknown ``definition``.
    """
    if definition not in VIC_DEFINITIONS:
        raise ValueError(
            f"Unknown VIC definition '{definition}'; valid definitions: "
            f"{', '.join(VIC_DEFINITIONS)}."
        )
    features_a = features_a.double()
    features_b = features_b.double()
    if normalize:
        unit_a, unit_b = normalize_features(features_a), normalize_features(features_b)
    else:
        unit_a, unit_b = features_a, features_b
    inv = invariance(unit_a, unit_b)
    if definition == "paper":
        z_a = _paper_preprocess(features_a, normalize)
        z_b = _paper_preprocess(features_b, normalize)
        var = (
            variance(z_a, eps=PAPER_VARIANCE_EPS)
            + variance(z_b, eps=PAPER_VARIANCE_EPS)
        ) / 2
        cov = (covariance_sum(z_a) + covariance_sum(z_b)) / 2
    else:
        var = (variance(unit_a) + variance(unit_b)) / 2
        cov = (covariance(unit_a) + covariance(unit_b)) / 2
    return VICStatistics(
        variance=var.item(), invariance=inv.item(), covariance=cov.item()
    )


def _paper_preprocess(features: Tensor, normalize: bool) -> Tensor:
    if normalize:
        return center_and_normalize(features)
    return features - features.mean(dim=0)


def _check_batch(features: Tensor) -> None:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"expected features of shape (batch_size >= 2, dim), got "
            f"{tuple(features.shape)}."
        )
