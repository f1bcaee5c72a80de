from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import timm
import torch
from references import attention_maps

from lightly_graft.functional.attention import (
    mean_attention_distance,
    patch_distance_matrix,
)
from lightly_graft.modules.attention_hooks import capture_attention

# The paper's own attention distance, pasted from
# https://github.com/VITA-Group/layerGraftedPretraining_ICLR23/blob/f1862e1effa4e0ab4f2c162b25c78d0623c5379c/utils/eval_attn_dist.py#L18-L54
# (``eval_avg_attn_dist`` there calls it on ``attn[:, :, 1:, 1:]``, L87-L88).


def compute_distance_matrix(patch_size, num_patches, length):
    """Helper function to compute distance matrix."""

    distance_matrix = np.zeros((num_patches, num_patches))

    for i in range(num_patches):
        for j in range(num_patches):
            if i == j:  # zero distance
                continue

            xi, yi = (int(i / length)), (i % length)
            xj, yj = (int(j / length)), (j % length)

            distance_matrix[i, j] = patch_size * np.linalg.norm([xi - xj, yi - yj])

    return distance_matrix


class compute_mean_attention_dist(torch.nn.Module):
    def __init__(self, patch_size, num_patches):
        super(compute_mean_attention_dist, self).__init__()  # noqa: UP008

        length = int(np.sqrt(num_patches))
        assert length**2 == num_patches, "Num patches is not perfect square"

        distance_matrix = compute_distance_matrix(patch_size, num_patches, length)
        h, w = distance_matrix.shape

        distance_matrix = distance_matrix.reshape((1, 1, h, w))
        distance_matrix = torch.from_numpy(distance_matrix)
        self.distance_matrix = distance_matrix

    def forward(self, attention_weights):
        mean_distances = attention_weights * self.distance_matrix
        mean_distances = torch.sum(
            mean_distances, dim=-1
        )  # sum along last axis to get average distance per token
        mean_distances = torch.mean(
            mean_distances, dim=-1
        )  # now average across all the tokes

        return mean_distances


def _tiny_vit(**kwargs: Any) -> Any:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=4,
        **kwargs,
    ).eval()


def _mean_pairwise_distance_loop(rows: int, cols: int, ph: float, pw: float) -> float:
    centres = [
        ((r + 0.5) * ph, (c + 0.5) * pw) for r in range(rows) for c in range(cols)
    ]
    total = 0.0
    for (y1, x1), (y2, x2) in itertools.product(centres, centres):
        total += math.hypot(y1 - y2, x1 - x2)
    return total / len(centres) ** 2


def test_mean_attention_distance__all_on_self_is_zero() -> None:
    num_tokens = 1 + 3 * 4
    attention = torch.eye(num_tokens).expand(2, 3, num_tokens, num_tokens)
    distance = mean_attention_distance(attention, grid_size=(3, 4), patch_size=(8, 8))
    torch.testing.assert_close(distance, torch.zeros(3, dtype=torch.float64))


def test_mean_attention_distance__uniform_is_mean_pairwise_distance() -> None:
    rows, cols, ph, pw = 3, 4, 8, 6
    num_patches = rows * cols
    # Half of every row goes to CLS, the other half uniformly to the patches.
    attention = torch.full((2, 3, 1 + num_patches, 1 + num_patches), 0.5 / num_patches)
    attention[..., 0] = 0.5
    expected = _mean_pairwise_distance_loop(rows, cols, ph, pw)
    renormalized = mean_attention_distance(
        attention, grid_size=(rows, cols), patch_size=(ph, pw), renormalize=True
    )
    torch.testing.assert_close(
        renormalized, torch.full((3,), expected, dtype=torch.float64), rtol=1e-6, atol=0
    )
    kept = mean_attention_distance(  # the default: CLS's share counts as 0 px
        attention, grid_size=(rows, cols), patch_size=(ph, pw)
    )
    torch.testing.assert_close(
        kept, torch.full((3,), expected / 2, dtype=torch.float64), rtol=1e-6, atol=0
    )


def test_mean_attention_distance__per_head() -> None:
    # Head 0 attends to itself (0 px); head 1 to the patch to its right in a 1x2 grid
    # and the right patch to the left one (both 5 px away with 5 px wide patches).
    attention = torch.zeros(1, 2, 3, 3)
    attention[0, 0] = torch.eye(3)
    attention[0, 1, :, 0] = 1.0
    attention[0, 1, 1, :] = torch.tensor([0.0, 0.0, 1.0])
    attention[0, 1, 2, :] = torch.tensor([0.0, 1.0, 0.0])
    distance = mean_attention_distance(attention, grid_size=(1, 2), patch_size=(5, 5))
    torch.testing.assert_close(distance, torch.tensor([0.0, 5.0], dtype=torch.float64))


def test_mean_attention_distance__rejects_wrong_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        mean_attention_distance(
            torch.ones(1, 1, 5, 5), grid_size=(3, 3), patch_size=(4, 4)
        )


def test_mean_attention_distance__equals_official_on_real_maps() -> None:
    vit = _tiny_vit()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 16, 16)
    for attention in attention_maps(vit, images):
        ours = mean_attention_distance(attention, grid_size=(4, 4), patch_size=(4, 4))
        attn = attention.double()[:, :, 1:, 1:]  # as eval_avg_attn_dist does
        official = compute_mean_attention_dist(patch_size=4, num_patches=16)(attn)
        # official: (batch, heads); ours: (heads,) averaged over the images
        torch.testing.assert_close(ours, official.mean(dim=0), rtol=1e-12, atol=0)
        assert ours.mean().item() == pytest.approx(official.mean().item(), rel=1e-12)
        renormalized = mean_attention_distance(
            attention, grid_size=(4, 4), patch_size=(4, 4), renormalize=True
        )
        assert (renormalized > ours).all()  # CLS's share no longer counts as 0 px


def test_patch_distance_matrix__matches_numpy_loop() -> None:
    distances = patch_distance_matrix((2, 3), (4, 2)).numpy()
    centres = np.array(
        [((r + 0.5) * 4, (c + 0.5) * 2) for r in range(2) for c in range(3)]
    )
    expected = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            expected[i, j] = np.linalg.norm(centres[i] - centres[j])
    np.testing.assert_allclose(distances, expected, rtol=1e-12)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_maps__match_timm_unfused_attention(qk_norm: bool) -> None:
    vit = _tiny_vit(qk_norm=qk_norm)
    images = torch.randn(2, 3, 16, 16)
    maps = attention_maps(vit, images)
    assert [m.shape for m in maps] == [torch.Size([2, 4, 17, 17])] * 2

    # Reference: timm's own unfused branch materialises the map before attn_drop.
    reference: list[torch.Tensor] = []
    for block in vit.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(
            lambda module, args, output: reference.append(output.detach())
        )
    with torch.no_grad():
        vit.forward_features(images)
    for recomputed, expected in zip(maps, reference, strict=True):
        torch.testing.assert_close(recomputed, expected, rtol=1e-5, atol=1e-6)


def test_attention_maps__match_manual_computation_for_one_block() -> None:
    vit = _tiny_vit()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        x = vit._pos_embed(vit.patch_embed(images))
        x = vit.norm_pre(vit.patch_drop(x))
        x = vit.blocks[0].norm1(x)
        attn = vit.blocks[0].attn
        weight, bias = attn.qkv.weight, attn.qkv.bias
        q, k, _ = (x @ weight.T + bias).chunk(3, dim=-1)
        q = q.reshape(2, 17, 4, 8).transpose(1, 2)
        k = k.reshape(2, 17, 4, 8).transpose(1, 2)
        expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(
        attention_maps(vit, images)[0], expected, rtol=1e-5, atol=1e-6
    )


def test_capture_attention__removes_hooks() -> None:
    vit = _tiny_vit()
    seen: list[int] = []
    with capture_attention(
        list(vit.blocks), lambda index, attention: seen.append(index)
    ):
        vit.forward_features(torch.randn(1, 3, 16, 16))
    vit.forward_features(torch.randn(1, 3, 16, 16))
    assert seen == [0, 1]


def test_capture_attention__rejects_non_timm_block() -> None:
    with pytest.raises(TypeError, match="timm Attention"):
        with capture_attention([torch.nn.Linear(2, 2)], lambda i, a: None):
            pass
