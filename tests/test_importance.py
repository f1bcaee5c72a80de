"""Tests for ccMIM's importance (functional.importance and the CLS row of
modules.attention_hooks; §3.2, official code)."""

from __future__ import annotations

import pytest
import torch
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.utils import random_token_mask
from scipy.stats import chisquare
from timm.models.vision_transformer import VisionTransformer

from lightly_graft.errors import GraftError
from lightly_graft.functional.importance import (
    ccmim_token_mask,
    importance_token_mask,
)
from lightly_graft.modules.attention_hooks import (
    attention_from_input,
    capture_attention,
    cls_attention_importance,
    cls_attention_row,
)


def _tiny_encoder(depth: int = 3) -> MaskedVisionTransformerTIMM:
    vit = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=depth, num_heads=4, num_classes=0
    )
    return MaskedVisionTransformerTIMM(vit).eval()


def test_cls_attention_row__reproduces_timm_attention_output() -> None:
    # The recomputed CLS row, applied to the values and the output projection,
    # must give timm's own (fused SDPA) attention output at the CLS position.
    torch.manual_seed(0)
    attn = _tiny_encoder().vit.blocks[0].attn
    x = torch.randn(2, 17, 32)
    qkv = attn.qkv(x).reshape(2, 17, 3, attn.num_heads, attn.head_dim)
    v = qkv[:, :, 2].transpose(1, 2)  # (B, H, N, hd)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
    per_head = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    cls_out = (per_head @ v).transpose(1, 2).reshape(2, 1, 32)
    expected = attn.proj(cls_out)[:, 0]
    torch.testing.assert_close(attn(x)[:, 0], expected, rtol=1e-5, atol=1e-5)
    # and the head average of those per-head rows is the CLS row that the
    # importance sums
    row = attention_from_input(attn, x).mean(1)[:, 0]
    torch.testing.assert_close(row, per_head.mean(1)[:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(row.sum(-1), torch.ones(2), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "options", [{}, {"qk_norm": True}, {"qkv_bias": False}], ids=str
)
def test_cls_attention_row__is_row_0_of_the_full_map(options: dict) -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=4, **options
    )
    attn = vit.blocks[0].attn
    x = torch.randn(3, 17, 32)
    row = cls_attention_row(attn, x)
    assert row.shape == (3, 4, 17)
    full = attention_from_input(attn, x)
    torch.testing.assert_close(row, full[:, :, 0], rtol=1e-6, atol=1e-7)


def _full_map_importance(encoder, images):
    """Today's reference: the CLS row read off the full (B, H, N, N) maps."""
    rows = []
    with (
        torch.no_grad(),
        capture_attention(
            encoder.vit.blocks, lambda i, a: rows.append(a[:, :, 0].mean(1))
        ),
    ):
        encoder.encode(images)
    return torch.stack(rows).sum(0)[:, 1:]


def test_cls_attention_importance__masks_as_with_the_full_map() -> None:
    """Same masks as from the full maps on seeded inputs; where an image's
    split differs, it is a near-tie: the swapped patches' importances agree to
    float rounding (none occurs at this seed)."""
    torch.manual_seed(0)
    encoder = _tiny_encoder(depth=4)
    images = torch.randn(64, 3, 16, 16)
    reference = _full_map_importance(encoder, images)
    importance = cls_attention_importance(encoder, images)
    torch.testing.assert_close(importance, reference, rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    keep, mask = importance_token_mask(importance)
    torch.manual_seed(1)
    keep_ref, mask_ref = importance_token_mask(reference)
    differing = [
        b for b in range(64) if set(mask[b].tolist()) != set(mask_ref[b].tolist())
    ]
    for b in differing:
        swapped = set(mask[b].tolist()) ^ set(mask_ref[b].tolist())
        scores = reference[b, [i - 1 for i in swapped]]
        assert (scores.max() - scores.min()) / scores.abs().max() < 1e-5
    assert differing == []
    assert torch.equal(keep[:, 0], keep_ref[:, 0])


def test_cls_attention_importance__sums_block_rows_of_the_forward() -> None:
    torch.manual_seed(0)
    encoder = _tiny_encoder(depth=3)
    images = torch.randn(2, 3, 16, 16)
    importance = cls_attention_importance(encoder, images)
    assert importance.shape == (2, 16) and not importance.requires_grad
    # reference: walk the blocks by hand (pre-norm: attn sees norm1(x))
    x = encoder.vit.norm_pre(encoder.preprocess(images))
    expected = torch.zeros(2, 16)
    with torch.no_grad():
        for block in encoder.vit.blocks:
            expected += attention_from_input(block.attn, block.norm1(x)).mean(1)[
                :, 0, 1:
            ]
            x = block(x)
    torch.testing.assert_close(importance, expected, rtol=1e-6, atol=1e-6)
    assert (importance.sum(-1) <= 3.0 + 1e-5).all()
    # hooks are removed afterwards
    assert all(not b.attn._forward_hooks for b in encoder.vit.blocks)


def test_importance_token_mask__shapes_and_cls_convention() -> None:
    torch.manual_seed(0)
    idx_keep, idx_mask = importance_token_mask(torch.rand(3, 64), mask_ratio=0.75)
    assert idx_keep.shape == (3, 17) and idx_mask.shape == (3, 48)
    assert (idx_keep[:, 0] == 0).all() and (idx_mask > 0).all()
    for b in range(3):  # a partition of the patches 1..L
        both = torch.cat([idx_keep[b, 1:], idx_mask[b]]).sort().values
        assert torch.equal(both, torch.arange(1, 65))


def test_importance_token_mask__peaked_attention_masks_top_patches() -> None:
    # A sharply peaked CLS attention: per block 80% of the mass on 8 of 64
    # patches, summed over 6 blocks. The masked set (48 of 64) must hold nearly
    # all top patches (chance level: 75%).
    torch.manual_seed(0)
    num_draws, num_patches, num_top = 200, 64, 8
    top = torch.stack([torch.randperm(num_patches)[:num_top] for _ in range(num_draws)])
    per_block = torch.full((num_draws, num_patches), 0.2 / (num_patches - num_top))
    per_block.scatter_(1, top, 0.8 / num_top)
    _, idx_mask = importance_token_mask(6 * per_block, mask_ratio=0.75)
    masked = torch.zeros(num_draws, num_patches + 1, dtype=torch.bool)
    masked.scatter_(1, idx_mask, True)
    frac_top_masked = masked[:, 1:].gather(1, top).float().mean().item()
    assert frac_top_masked > 0.95


def test_importance_token_mask__mildly_peaked_is_sampling_not_topk() -> None:
    # With a weak peak the noise still lets some top patches into the visible set
    # (importance *sampling*, Table 5), but more often masked than by chance.
    torch.manual_seed(0)
    importance = torch.zeros(400, 64)
    importance[:, :8] = 0.2  # measured: 92.6% of top patches masked (seed 0)
    _, idx_mask = importance_token_mask(importance, mask_ratio=0.75)
    frac = (idx_mask <= 8).sum().item() / (400 * 8)
    assert 0.85 < frac < 0.98


def test_importance_token_mask__uniform_attention_splits_uniformly() -> None:
    # Equal importance: every patch must be masked equally often. Pearson
    # chi-square over 4000 seeded draws, 63 degrees of freedom; we require
    # p > 0.001 (a fixed or biased split gives p ~ 0).
    torch.manual_seed(0)
    num_draws, num_patches = 4000, 64
    _, idx_mask = importance_token_mask(
        torch.full((num_draws, num_patches), 0.3), mask_ratio=0.75
    )
    counts = torch.bincount(idx_mask.flatten() - 1, minlength=num_patches).double()
    expected = torch.full_like(counts, num_draws * 48 / num_patches)
    assert chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    # and the sets differ between images
    assert len({tuple(sorted(r.tolist())) for r in idx_mask[:100]}) == 100


def test_ccmim_token_mask__random_switch_is_lightly_random_mask() -> None:
    torch.manual_seed(7)
    ours = ccmim_token_mask(4, 64, mask_ratio=0.75, random_masking=True)
    torch.manual_seed(7)
    reference = random_token_mask((4, 65), mask_ratio=0.75)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])


def test_ccmim_token_mask__importance_path_and_errors() -> None:
    torch.manual_seed(0)
    importance = torch.rand(2, 16)
    torch.manual_seed(1)
    ours = ccmim_token_mask(2, 16, mask_ratio=0.5, importance=importance)
    torch.manual_seed(1)
    expected = importance_token_mask(importance, mask_ratio=0.5)
    assert torch.equal(ours[0], expected[0]) and torch.equal(ours[1], expected[1])
    with pytest.raises(GraftError, match="importance"):
        ccmim_token_mask(2, 16)
    with pytest.raises(GraftError, match="mask_ratio=1.0"):
        ccmim_token_mask(2, 16, mask_ratio=1.0, random_masking=True)
