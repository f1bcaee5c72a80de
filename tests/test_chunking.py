"""Tests for lightly_graft.functional.chunking (Masked MoCo, §3.2-3.3)."""

from __future__ import annotations

import pytest
import torch
from lightly.models.modules import MaskedVisionTransformerTIMM
from timm.models.vision_transformer import VisionTransformer

from lightly_graft.errors import GraftError
from lightly_graft.functional.chunking import (
    chunk_token_indices,
    gather_chunks,
    spherical_mean,
    unflatten_chunks,
)


def _tiny_encoder() -> MaskedVisionTransformerTIMM:
    vit = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=0
    )
    return MaskedVisionTransformerTIMM(vit).eval()


@pytest.mark.parametrize("num_chunks", [1, 2, 4, 8, 16])
def test_chunk_token_indices__partition_patches_exactly(num_chunks: int) -> None:
    torch.manual_seed(0)
    batch_size, num_patches = 5, 16
    idx = chunk_token_indices(batch_size, num_patches, num_chunks)
    assert idx.shape == (num_chunks * batch_size, 1 + num_patches // num_chunks)
    assert (idx[:, 0] == 0).all()  # CLS in every chunk
    chunks = unflatten_chunks(idx[:, 1:], num_chunks)  # (n, B, L/n)
    for b in range(batch_size):
        patches = chunks[:, b].flatten()
        # every patch token 1..L exactly once: none lost, none repeated
        assert torch.equal(torch.sort(patches).values, torch.arange(1, num_patches + 1))


def test_chunk_token_indices__one_chunk_is_full_sequence() -> None:
    torch.manual_seed(0)
    idx = chunk_token_indices(3, 16, 1)
    assert torch.equal(idx, torch.arange(17).expand(3, 17))


def test_chunk_token_indices__shuffles_per_image() -> None:
    torch.manual_seed(0)
    idx = chunk_token_indices(64, 16, 4)
    first_chunks = unflatten_chunks(idx, 4)[0]  # (B, 5)
    assert len({tuple(row.tolist()) for row in first_chunks}) > 50


@pytest.mark.parametrize("num_chunks", [0, 3, 17])
def test_chunk_token_indices__bad_num_chunks_raises(num_chunks: int) -> None:
    with pytest.raises(GraftError, match=f"num_chunks={num_chunks}"):
        chunk_token_indices(2, 16, num_chunks)


def test_chunk_token_indices__drop_remainder_keeps_chunks_equal_and_disjoint() -> None:
    # ViT-B/16 at 224 px: 196 patches, n = 8 -> 8 chunks of 24, 4 left out
    torch.manual_seed(0)
    idx = chunk_token_indices(3, 196, 8, drop_remainder=True)
    assert idx.shape == (8 * 3, 1 + 24) and (idx[:, 0] == 0).all()
    chunks = unflatten_chunks(idx[:, 1:], 8)
    left_out = set()
    for b in range(3):
        patches = chunks[:, b].flatten()
        assert patches.unique().numel() == 192  # none repeated
        assert patches.min() >= 1 and patches.max() <= 196
        left_out.add(tuple(sorted(set(range(1, 197)) - set(patches.tolist()))))
    assert len(left_out) == 3  # the left-out patches are random per image
    # divisible: drop_remainder changes nothing
    torch.manual_seed(1)
    a = chunk_token_indices(2, 16, 4, drop_remainder=True)
    torch.manual_seed(1)
    assert torch.equal(a, chunk_token_indices(2, 16, 4))


def test_gather_chunks__equals_repeated_images_forward() -> None:
    torch.manual_seed(0)
    encoder = _tiny_encoder()
    images = torch.randn(3, 3, 16, 16)
    idx = chunk_token_indices(3, 16, 4)
    expected = encoder.preprocess(images.repeat(4, 1, 1, 1), idx_keep=idx)
    tokens = gather_chunks(encoder.preprocess(images), idx)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    # chunks are independent sequences: chunk c of image b only sees its tokens
    out = encoder.vit.norm(encoder.vit.blocks(tokens))[:, 0]
    single = encoder(images[1:2], idx_keep=idx[2 * 3 + 1 : 2 * 3 + 2])
    torch.testing.assert_close(out[2 * 3 + 1 : 2 * 3 + 2], single, rtol=1e-5, atol=1e-5)


def test_gather_chunks__one_chunk_equals_full_forward() -> None:
    torch.manual_seed(0)
    encoder = _tiny_encoder()
    images = torch.randn(2, 3, 16, 16)
    idx = chunk_token_indices(2, 16, 1)
    tokens = gather_chunks(encoder.preprocess(images), idx)
    torch.testing.assert_close(tokens, encoder.preprocess(images), rtol=0, atol=0)


def test_unflatten_chunks__chunk_major_order() -> None:
    x = torch.arange(6).view(6, 1)  # rows c * B + b with B=3
    assert unflatten_chunks(x, 2)[1, 0].item() == 3


def test_spherical_mean__unit_norm_and_direction() -> None:
    torch.manual_seed(0)
    keys = torch.randn(4, 8, 16) * torch.rand(4, 8, 1) * 10  # (m, B, D), any norm
    mean = spherical_mean(keys, dim=0)
    assert mean.shape == (8, 16)
    torch.testing.assert_close(mean.norm(dim=-1), torch.ones(8), rtol=0, atol=1e-6)
    # Eq. 4 on unit keys: sum_i k_i / ||sum_i k_i||
    unit = torch.nn.functional.normalize(keys, dim=-1)
    expected = unit.sum(0) / unit.sum(0).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(mean, expected, rtol=1e-6, atol=1e-6)


def test_spherical_mean__single_key_is_the_key() -> None:
    torch.manual_seed(0)
    key = torch.nn.functional.normalize(torch.randn(1, 5, 8), dim=-1)
    torch.testing.assert_close(spherical_mean(key, dim=0), key[0], rtol=0, atol=1e-7)
