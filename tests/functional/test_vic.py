from __future__ import annotations

import pytest
import torch
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss

from lightly_graft.functional.vic import (
    covariance,
    invariance,
    normalize_features,
    token_average,
    variance,
    vic_statistics,
)


def test_variance__collapsed_features_give_zero() -> None:
    features = torch.randn(1, 16).repeat(8, 1)
    assert variance(features).item() == pytest.approx(0.0, abs=1e-7)


def test_vic_statistics__collapsed_features_give_zero_variance() -> None:
    torch.manual_seed(0)
    collapsed = torch.randn(1, 16).repeat(8, 1) * torch.rand(8, 1)  # same direction
    stats = vic_statistics(collapsed, collapsed)
    assert stats.variance == pytest.approx(0.0, abs=1e-7)
    assert stats.covariance == pytest.approx(0.0, abs=1e-12)


def test_invariance__identical_views_give_zero() -> None:
    torch.manual_seed(0)
    features = torch.randn(8, 16)
    assert invariance(features, features.clone()).item() == 0.0
    assert vic_statistics(features, features.clone()).invariance == 0.0


def test_covariance__hand_checked() -> None:
    # Centred rows; Z^T Z = [[10, 8], [8, 10]], C = Z^T Z / 3: off-diagonal 8/3,
    # mean of the two squared off-diagonal entries = 64/9.
    features = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [2.0, 1.0], [-2.0, -1.0]])
    assert covariance(features.double()).item() == pytest.approx(64 / 9, rel=1e-12)


def test_covariance__independent_dimensions_give_zero() -> None:
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert covariance(features).item() == 0.0


def test_statistics__match_lightly_vicreg_terms() -> None:
    # lightly's terms: covariance_loss = sum_offdiag C^2 / dim, i.e. ours * (dim - 1);
    # variance_loss(eps=0) = mean(relu(1 - std)) = 1 - ours when every std < 1;
    # invariance_loss = MSE.
    torch.manual_seed(0)
    a = normalize_features(torch.randn(32, 10, dtype=torch.float64))
    b = normalize_features(a + 0.1 * torch.randn(32, 10, dtype=torch.float64))
    torch.testing.assert_close(
        covariance(a) * 9, covariance_loss(a), atol=1e-10, rtol=1e-10
    )
    torch.testing.assert_close(
        1 - variance(a), variance_loss(a, eps=0.0), atol=1e-10, rtol=1e-10
    )
    torch.testing.assert_close(
        invariance(a, b), invariance_loss(a, b), atol=1e-10, rtol=1e-10
    )


def test_vic_statistics__normalizes_away_magnitude() -> None:
    torch.manual_seed(0)
    a = torch.randn(16, 8, dtype=torch.float64)
    b = torch.randn(16, 8, dtype=torch.float64)
    scaled = vic_statistics(a * 7.0, b * 7.0)
    plain = vic_statistics(a, b)
    assert scaled.variance == pytest.approx(plain.variance, rel=1e-9)
    assert scaled.covariance == pytest.approx(plain.covariance, rel=1e-9)
    assert scaled.invariance == pytest.approx(plain.invariance, rel=1e-9)
    unnormalized = vic_statistics(a * 7.0, b * 7.0, normalize=False)
    assert unnormalized.variance > 10 * plain.variance


def test_token_average__means_over_tokens() -> None:
    tokens = torch.arange(12.0).reshape(1, 3, 4)
    torch.testing.assert_close(token_average(tokens), torch.tensor([[4.0, 5, 6, 7]]))


def test_variance__rejects_single_sample() -> None:
    with pytest.raises(ValueError, match="batch_size >= 2"):
        variance(torch.randn(1, 4))
