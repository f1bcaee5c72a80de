from __future__ import annotations

import pytest
import torch
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss

from lightly_graft.functional.vic import (
    PAPER_VARIANCE_EPS,
    center_and_normalize,
    covariance,
    covariance_sum,
    invariance,
    normalize_features,
    token_average,
    variance,
    vic_statistics,
)

# The paper's own VIC, pasted from the loop body of ``evaluate_VIC`` (features of
# one layer, ``x`` and ``y`` the two views' (batch, tokens, dim) block outputs) in
# https://github.com/VITA-Group/layerGraftedPretraining_ICLR23/blob/f1862e1effa4e0ab4f2c162b25c78d0623c5379c/utils/pretrain.py#L103-L174
# (only the AverageMeter updates became a returned dict).


def off_diagonal(x):
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def official_vic(x, y):
    x = x.mean(1)
    y = y.mean(1)

    # compute norm
    norm_x = torch.norm(x, p=2, dim=-1)
    norm_y = torch.norm(y, p=2, dim=-1)

    # normalize
    x_norm = x / norm_x.unsqueeze(-1)
    y_norm = y / norm_y.unsqueeze(-1)

    mse_loss = torch.nn.functional.mse_loss(x_norm, y_norm)

    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    norm_x = torch.norm(x, p=2, dim=-1)
    norm_y = torch.norm(y, p=2, dim=-1)
    # calculate the norm after remove mean
    x = x / norm_x.unsqueeze(-1)
    y = y / norm_y.unsqueeze(-1)

    std_x = torch.sqrt(x.var(dim=0) + 0.0001).mean()
    std_y = torch.sqrt(y.var(dim=0) + 0.0001).mean()

    batch_size = x.shape[0]
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = (
        off_diagonal(cov_x).pow_(2).sum() + off_diagonal(cov_y).pow_(2).sum()
    ) / 2
    return {
        "Var": ((std_x + std_y) / 2).item(),
        "InVar": mse_loss.item(),
        "CoVar": cov_loss.item(),
    }


def _views_with_common_mean(
    batch: int = 64, tokens: int = 5, dim: int = 48
) -> tuple[torch.Tensor, torch.Tensor]:
    # Block outputs share a large mean direction, as deep ViT blocks' do.
    generator = torch.Generator().manual_seed(0)
    mean = 3.0 * torch.randn(1, 1, dim, generator=generator, dtype=torch.float64)
    x = mean + torch.randn(batch, tokens, dim, generator=generator, dtype=torch.float64)
    y = x + 0.5 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return x, y


def test_vic_statistics__paper_definition_equals_official_evaluate_vic() -> None:
    x, y = _views_with_common_mean()
    official = official_vic(x.clone(), y.clone())
    ours = vic_statistics(token_average(x), token_average(y))  # "paper" by default
    assert ours.variance == pytest.approx(official["Var"], rel=1e-12)
    assert ours.invariance == pytest.approx(official["InVar"], rel=1e-12)
    assert ours.covariance == pytest.approx(official["CoVar"], rel=1e-12)


def test_vic_statistics__per_entry_differs_from_official_on_common_mean() -> None:
    # The deviation the "paper" default removes: without centring, the common mean
    # dominates the l2 normalisation and the spread around it shrinks.
    x, y = _views_with_common_mean()
    official = official_vic(x.clone(), y.clone())
    ours = vic_statistics(token_average(x), token_average(y), definition="per_entry")
    assert ours.invariance == pytest.approx(official["InVar"], rel=1e-12)
    assert ours.variance < 0.5 * official["Var"]
    assert ours.covariance < 0.01 * official["CoVar"]


def test_covariance_sum__is_dim_minus_one_times_covariance_on_centred_rows() -> None:
    torch.manual_seed(0)
    features = torch.randn(16, 6, dtype=torch.float64)
    centred = features - features.mean(dim=0)
    torch.testing.assert_close(
        covariance_sum(centred), covariance(centred) * 6 * 5, rtol=1e-12, atol=0
    )


def test_center_and_normalize__unit_rows_around_the_batch_mean() -> None:
    features = torch.tensor([[3.0, 4.0], [5.0, 4.0], [4.0, 7.0], [4.0, 1.0]])
    expected = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    torch.testing.assert_close(center_and_normalize(features), expected)


def test_vic_statistics__rejects_unknown_definition() -> None:
    with pytest.raises(ValueError, match="valid definitions: paper, per_entry"):
        vic_statistics(torch.randn(4, 3), torch.randn(4, 3), definition="vicreg")


def test_variance__collapsed_features_give_zero() -> None:
    features = torch.randn(1, 16).repeat(8, 1)
    assert variance(features).item() == pytest.approx(0.0, abs=1e-7)


def test_vic_statistics__collapsed_features_give_zero_variance() -> None:
    torch.manual_seed(0)
    collapsed = torch.randn(1, 16).repeat(8, 1) * torch.rand(8, 1)  # same direction
    stats = vic_statistics(collapsed, collapsed, definition="per_entry")
    assert stats.variance == pytest.approx(0.0, abs=1e-7)
    assert stats.covariance == pytest.approx(0.0, abs=1e-12)


def test_vic_statistics__paper_collapsed_features_give_sqrt_eps() -> None:
    collapsed = torch.randn(1, 16).repeat(8, 1)  # every sample the same vector
    stats = vic_statistics(collapsed, collapsed)
    assert stats.variance == pytest.approx(PAPER_VARIANCE_EPS**0.5, rel=1e-9)
    assert stats.covariance == 0.0


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


@pytest.mark.parametrize("definition", ["paper", "per_entry"])
def test_vic_statistics__normalizes_away_magnitude(definition: str) -> None:
    torch.manual_seed(0)
    a = torch.randn(16, 8, dtype=torch.float64)
    b = torch.randn(16, 8, dtype=torch.float64)
    scaled = vic_statistics(a * 7.0, b * 7.0, definition=definition)
    plain = vic_statistics(a, b, definition=definition)
    assert scaled.variance == pytest.approx(plain.variance, rel=1e-9)
    assert scaled.covariance == pytest.approx(plain.covariance, rel=1e-9)
    assert scaled.invariance == pytest.approx(plain.invariance, rel=1e-9)
    unnormalized = vic_statistics(
        a * 7.0, b * 7.0, definition=definition, normalize=False
    )
    assert unnormalized.variance > 10 * plain.variance


def test_token_average__means_over_tokens() -> None:
    tokens = torch.arange(12.0).reshape(1, 3, 4)
    torch.testing.assert_close(token_average(tokens), torch.tensor([[4.0, 5, 6, 7]]))


def test_variance__rejects_single_sample() -> None:
    with pytest.raises(ValueError, match="batch_size >= 2"):
        variance(torch.randn(1, 4))
