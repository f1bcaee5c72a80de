"""Masked MoCo / Masked BYOL: objective (Eq. 3-4), chunked encoding, method."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from graft_testing import tiny_method, tiny_views
from torch.testing import assert_close

from lightly_graft import zoo
from lightly_graft.errors import GraftError
from lightly_graft.functional.chunking import chunk_token_indices
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.methods.masked_moco import MaskedBYOL, MaskedMoCo
from lightly_graft.modules.chunks import encode_chunks, random_chunks
from lightly_graft.modules.objectives import build_objective


def _ctr(q: torch.Tensor, k: torch.Tensor, T: float = 0.2) -> torch.Tensor:
    """moco-v3 builder.py ``contrastive_loss`` (one process):
    https://github.com/facebookresearch/moco-v3/blob/c349e6e24f40d3fedb22d973f92defa4cedf37a7/moco/builder.py#L63-L73
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", [q, k]) / T
    return F.cross_entropy(logits, torch.arange(logits.shape[0])) * (2 * T)


def test_masked_contrastive__averages_chunk_losses_eq3() -> None:
    torch.manual_seed(0)
    n, B, D = 4, 6, 8
    q1, q2 = torch.randn(n, B, D), torch.randn(n, B, D)
    k1, k2 = torch.randn(B, D), torch.randn(B, D)
    objective = build_objective("masked_contrastive", temperature=0.2)
    loss = objective([q1, q2], [k1[None], k2[None]])
    expected = sum(_ctr(q1[c], k2) + _ctr(q2[c], k1) for c in range(n)) / n
    assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_masked_contrastive__target_chunks_use_spherical_mean_eq4() -> None:
    torch.manual_seed(0)
    m, B, D = 3, 5, 8
    q1, q2 = torch.randn(1, B, D), torch.randn(1, B, D)
    k1, k2 = torch.randn(m, B, D), torch.randn(m, B, D)

    def k_hat(k: torch.Tensor) -> torch.Tensor:
        k = F.normalize(k, dim=-1).sum(0)
        return k / k.norm(dim=-1, keepdim=True)

    loss = build_objective("masked_contrastive")([q1, q2], [k1, k2])
    expected = _ctr(q1[0], k_hat(k2)) + _ctr(q2[0], k_hat(k1))
    assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_masked_contrastive__one_chunk_is_the_base_objective() -> None:
    torch.manual_seed(0)
    q = [torch.randn(7, 16) for _ in range(2)]
    k = [torch.randn(7, 16) for _ in range(2)]
    for base in ("contrastive", "byol"):
        masked = build_objective("masked_contrastive", base=base)
        plain = build_objective(base)
        assert_close(
            masked([x[None] for x in q], [x[None] for x in k]),
            plain(q, k),
            rtol=0,
            atol=0,
        )


def test_masked_contrastive__gathers_each_views_keys_once(monkeypatch) -> None:
    """Under DDP (faked: rank 1 of 2) the keys are normalised and gathered once
    per view, 2 collectives per step instead of 2n, with the same loss."""
    from lightly_graft.functional import contrastive

    calls = []

    def fake_gather(key: torch.Tensor) -> torch.Tensor:  # rank 0's keys first
        calls.append(key.shape)
        return torch.cat([key.flip(0).roll(1, dims=1), key])

    monkeypatch.setattr(contrastive.dist, "world_size", lambda: 2)
    monkeypatch.setattr(contrastive.dist, "rank", lambda: 1)
    monkeypatch.setattr(contrastive, "concat_all_gather", fake_gather)
    torch.manual_seed(0)
    n, B, D = 4, 6, 8
    q1, q2 = torch.randn(n, B, D), torch.randn(n, B, D)
    k1, k2 = torch.randn(B, D), torch.randn(B, D)
    objective = build_objective("masked_contrastive", gather_distributed=True)
    loss = objective([q1, q2], [k1[None], k2[None]])
    assert len(calls) == 2
    per_chunk = [
        contrastive.infonce(q1[c], k2, 0.2, True)
        + contrastive.infonce(q2[c], k1, 0.2, True)
        for c in range(n)
    ]
    assert len(calls) == 2 + 2 * n  # what the per-chunk path costs
    assert_close(loss, sum(per_chunk) / n, rtol=1e-6, atol=1e-6)


def test_encode_chunks__equals_lightly_forward_on_repeated_images() -> None:
    torch.manual_seed(0)
    method = tiny_method("masked_moco").eval()
    images = torch.randn(3, 3, 32, 32)
    idx = chunk_token_indices(3, 16, 4)
    ours = encode_chunks(method.backbone, images, idx)
    lightly = method.backbone.encode(images.repeat(4, 1, 1, 1), idx_keep=idx)
    assert_close(ours, lightly, rtol=1e-6, atol=1e-6)


def test_random_chunks__one_chunk_is_the_full_view() -> None:
    # m = 1 (or n = 1) is no masking: the chunk path gives the full-view feature.
    torch.manual_seed(0)
    method = tiny_method("masked_moco").eval()
    images = torch.randn(3, 3, 32, 32)
    cls = random_chunks(method.backbone_momentum, images, 1)[:, 0]
    assert_close(cls, method.backbone_momentum(images), rtol=1e-6, atol=1e-6)


def _same_weights(head_norm: str, **masked_args) -> tuple[MaskedMoCo, GraftedMoCo]:
    torch.manual_seed(0)
    masked = tiny_method("masked_moco", head_norm=head_norm, **masked_args)
    plain = tiny_method("grafted_moco", head_norm=head_norm, freeze_patch_embed=False)
    plain.load_state_dict(masked.state_dict())
    return masked.train(), plain.train()


@pytest.mark.parametrize("head_norm", ["batch", "layer"])
def test_masked_moco__one_chunk_equals_plain_moco_v3(head_norm: str) -> None:
    masked, plain = _same_weights(head_norm, num_chunks=1)
    views = tiny_views(2)
    out_masked = masked.training_loss(views)
    out_plain = plain.training_loss(views)
    assert_close(out_masked.loss, out_plain.loss, rtol=1e-6, atol=1e-6)
    out_masked.loss.backward()
    out_plain.loss.backward()
    for (name, a), b in zip(masked.named_parameters(), plain.parameters(), strict=True):
        if a.grad is not None or b.grad is not None:
            assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert out_masked.logs == {}  # no kappa with one chunk


def test_masked_moco__chunk_loss_is_mean_over_chunks_of_moco_v3() -> None:
    masked, _ = _same_weights("layer", num_chunks=4)
    views = tiny_views(2)
    torch.manual_seed(3)
    loss = masked.training_loss(views).loss
    torch.manual_seed(3)  # the same chunk draws, recomputed by hand
    q = [masked.chunk_queries(v)[0] for v in views]  # (n, B, D)
    k = [masked.projector_momentum(masked.backbone_momentum(v)) for v in views]
    expected = sum(_ctr(q[0][c], k[1]) + _ctr(q[1][c], k[0]) for c in range(4)) / 4
    assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_masked_moco__target_chunks_and_kappa_logs() -> None:
    torch.manual_seed(0)
    method = tiny_method("masked_moco", num_target_chunks=2).train()
    keys, features = method.chunk_keys(tiny_views(1)[0])
    assert keys.shape == (2, 8, 16) and features.shape == (8, 32)
    out = method.training_loss(tiny_views(2))
    assert torch.isfinite(out.loss)
    assert set(out.logs) == {"kappa", "kappa_proj", "kappa_pred"}
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.logs.values())


def test_masked_moco__defaults_follow_the_paper() -> None:
    config = {f.name: f.default for f in fields(zoo.get("masked_moco").config_cls)}
    assert config["num_chunks"] == 8 and config["num_target_chunks"] == 1
    assert config["head_norm"] == "layer" and config["temperature"] == 0.2
    method = tiny_method("masked_moco", head_norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in method.projector.modules())
    assert not any(
        isinstance(m, torch.nn.BatchNorm1d)
        for m in tiny_method("masked_moco").modules()
    )


def test_masked_moco__chunks_not_dividing_patches() -> None:
    with pytest.raises(GraftError, match="num_chunks=3.*drop_remainder=True"):
        tiny_method("masked_moco", num_chunks=3, drop_remainder=False)
    # default (the paper's ViT-B/16: 196 patches, n=8): equal chunks of L // n
    torch.manual_seed(0)
    method = tiny_method("masked_moco", num_chunks=3, num_target_chunks=3).train()
    queries, _ = method.chunk_queries(tiny_views(1)[0])
    assert queries.shape == (3, 8, 16)
    assert torch.isfinite(method.training_loss(tiny_views(2)).loss)


def test_masked_byol__byol_loss_and_no_last_predictor_norm() -> None:
    torch.manual_seed(0)
    method = tiny_method("masked_byol").train()
    last = list(method.predictor.modules())[-1]
    assert isinstance(last, torch.nn.Linear)  # no norm after the output fc
    out = method.training_loss(tiny_views(2))
    assert -1.0 <= out.loss.item() <= 1.0  # negative cosine


@pytest.mark.parametrize("cls", [MaskedMoCo, MaskedBYOL])
def test_masked_methods__hparams_rebuild_the_method(cls: type) -> None:
    name = "masked_moco" if cls is MaskedMoCo else "masked_byol"
    method = tiny_method(name, num_target_chunks=2)
    rebuilt = cls(**method.hparams)
    assert rebuilt.num_target_chunks == 2


def test_per_image_kappa__groups_chunks_of_one_image() -> None:
    # chunk-major rows c * B + b: every chunk of image b is e_b, so each image's
    # chunks coincide (huge kappa); grouping rows the other way would mix images.
    from lightly_graft.methods.masked_moco import _per_image_kappa

    n, B, D = 4, 3, 8
    features = torch.eye(D)[:B].repeat(n, 1)  # (n*B, D), row c*B + b = e_b
    assert _per_image_kappa(features, n).item() > 1e5
    mixed = torch.eye(D)[:B].repeat_interleave(n, dim=0)  # rows b*n + c = e_b
    assert _per_image_kappa(mixed, n).item() < 10


def test_encode_chunks__final_norm_acts_per_token() -> None:
    torch.manual_seed(0)
    method = tiny_method("masked_moco").eval()
    images = torch.randn(2, 3, 32, 32)
    idx = chunk_token_indices(2, 16, 4)
    raw = encode_chunks(method.backbone, images, idx, final_norm=False)
    normed = encode_chunks(method.backbone, images, idx)
    assert_close(method.backbone.vit.norm(raw[:, 0]), normed[:, 0])


def test_masked_moco__one_target_chunk_is_no_target_masking() -> None:
    # m = 1: the keys are plain MoCo v3 keys of the full view (same weights),
    # whatever the random state (no chunk is drawn for the target).
    masked, plain = _same_weights("layer", num_chunks=4, num_target_chunks=1)
    view = tiny_views(1)[0]
    torch.manual_seed(1)
    keys, features = masked.chunk_keys(view)
    with torch.no_grad():
        expected = plain.projector_momentum(plain.backbone_momentum(view))
    assert keys.shape == (1, *expected.shape)
    assert_close(keys[0], expected, rtol=0, atol=0)
    assert_close(features, plain.backbone_momentum(view).detach(), rtol=0, atol=0)
    torch.manual_seed(2)
    assert_close(masked.chunk_keys(view)[0], keys, rtol=0, atol=0)
