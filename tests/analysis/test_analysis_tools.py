from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from references import attention_maps

from lightly_graft.analysis import (
    GradientConflict,
    TSNEResult,
    embed,
    measure_attention_distance,
    measure_gradient_conflict,
    measure_vic,
    tsne,
    write_attention_distance,
    write_gradient_conflict,
    write_tsne,
    write_vic,
)
from lightly_graft.analysis.vic import block_features
from lightly_graft.functional.attention import mean_attention_distance
from lightly_graft.functional.gradients import block_parameters
from lightly_graft.functional.vic import vic_statistics

DEPTH = 3


def _tiny_vit(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224",
        num_classes=0,
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=DEPTH,
        num_heads=2,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def _assert_png(path: Path) -> None:
    assert path.suffix == ".png" and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_conflict_summary__matches_numpy() -> None:
    values = {0: [0.1, 0.5, 0.3, 0.2], 1: [-0.1, 0.0, 0.1], 2: []}
    rows = GradientConflict(values=values).summary()
    assert [r["block"] for r in rows] == [0, 1, 2]
    assert rows[0]["median"] == pytest.approx(0.25)
    assert rows[0]["q1"] == pytest.approx(np.percentile(values[0], 25))
    assert rows[1]["fraction_negative"] == pytest.approx(1 / 3)
    assert rows[2]["count"] == 0 and math.isnan(rows[2]["median"])


def test_gradient_conflict_median_regression__recovers_line() -> None:
    values = {b: [0.5 - 0.1 * b + d for d in (-0.2, 0.0, 0.3)] for b in range(5)}
    slope, intercept = GradientConflict(values=values).median_regression()
    assert slope == pytest.approx(-0.1)
    assert intercept == pytest.approx(0.5)


def test_measure_gradient_conflict__identical_terms_and_writes(tmp_path: Path) -> None:
    vit = _tiny_vit()

    def loss_terms(views: Any) -> dict[str, torch.Tensor]:
        loss = vit.forward_features(views[0]).pow(2).mean()
        return {"mim": loss, "cl": loss * 0.5, "other": -loss}

    batches = [[torch.randn(2, 3, 16, 16)] for _ in range(3)]
    blocks = block_parameters(vit.blocks)
    same = measure_gradient_conflict(loss_terms, batches, blocks)
    assert all(
        v == pytest.approx(1.0) for values in same.values.values() for v in values
    )
    opposite = measure_gradient_conflict(
        loss_terms, batches, blocks, terms=("mim", "other")
    )
    assert opposite.terms == ("mim", "other")
    assert [len(v) for v in opposite.values.values()] == [3] * DEPTH
    png, summary, long = write_gradient_conflict(opposite, tmp_path, title="toy")
    _assert_png(png)
    assert [int(r["block"]) for r in _read_csv(summary)] == list(range(DEPTH))
    rows = _read_csv(long)
    assert len(rows) == 3 * DEPTH
    assert all(float(r["cosine"]) == pytest.approx(-1.0) for r in rows)


def test_block_features__match_manual_block_loop() -> None:
    vit = _tiny_vit().eval()
    images = torch.randn(2, 3, 16, 16)
    features = block_features(vit, images)
    patches = block_features(vit, images, include_prefix_tokens=False)
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        for index, block in enumerate(vit.blocks):
            x = block(x)
            torch.testing.assert_close(features[index], x.mean(dim=1))
            torch.testing.assert_close(patches[index], x[:, 1:].mean(dim=1))


def test_measure_vic__identical_views_and_writes(tmp_path: Path) -> None:
    vit = _tiny_vit()
    batches = [(x, x.clone()) for x in (torch.randn(4, 3, 16, 16) for _ in range(2))]
    stats = measure_vic(vit, batches)
    assert len(stats) == DEPTH
    assert all(s.invariance == 0.0 and s.variance > 0 for s in stats)
    assert vit.training  # mode restored
    noisy = [(x, x + torch.randn_like(x)) for x, _ in batches]
    png, csv_path = write_vic(
        {"a": stats, "b": measure_vic(_tiny_vit(1), noisy)}, tmp_path
    )
    _assert_png(png)
    rows = _read_csv(csv_path)
    assert [(r["label"], int(r["block"])) for r in rows] == [
        (label, block) for label in "ab" for block in range(DEPTH)
    ]
    assert all(float(r["invariance"]) > 0 for r in rows if r["label"] == "b")
    assert {r["definition"] for r in rows} == {"paper"}


def test_measure_vic__averages_batches_as_the_paper_or_pools() -> None:
    vit = _tiny_vit().eval()
    batches = [
        (x, x + 0.3 * torch.randn_like(x))
        for x in (torch.randn(4, 3, 16, 16) for _ in range(3))
    ]
    per_batch = [
        [
            vic_statistics(a, b)
            for a, b in zip(
                block_features(vit, views[0]),
                block_features(vit, views[1]),
                strict=True,
            )
        ]
        for views in batches
    ]
    measured = measure_vic(vit, batches)
    for block, stats in enumerate(measured):
        for name in ("variance", "invariance", "covariance"):
            expected = np.mean([getattr(b[block], name) for b in per_batch])
            assert getattr(stats, name) == pytest.approx(expected, rel=1e-9)
    one_more = [*batches, (torch.randn(1, 3, 16, 16),) * 2]  # no variance: left out
    assert measure_vic(vit, one_more) == measured
    pooled = measure_vic(vit, batches, pool_batches=True, definition="per_entry")
    features = [
        [
            torch.cat(f)
            for f in zip(*(block_features(vit, v[i]) for v in batches), strict=True)
        ]
        for i in (0, 1)
    ]
    for block, stats in enumerate(pooled):
        expected = vic_statistics(
            features[0][block], features[1][block], definition="per_entry"
        )
        assert stats.variance == pytest.approx(expected.variance, rel=1e-9)
        assert stats.covariance == pytest.approx(expected.covariance, rel=1e-9)
        assert stats.invariance == pytest.approx(expected.invariance, rel=1e-9)


def test_measure_attention_distance__matches_batchwise_reference(
    tmp_path: Path,
) -> None:
    vit = _tiny_vit().eval()
    batches = [torch.randn(3, 3, 16, 16), torch.randn(1, 3, 16, 16)]
    distances = measure_attention_distance(vit, batches)
    assert distances.shape == (DEPTH, 2)
    expected = torch.zeros(DEPTH, 2, dtype=torch.float64)
    for images in batches:
        for block, maps in enumerate(attention_maps(vit, images)):
            distance = mean_attention_distance(
                maps, grid_size=(4, 4), patch_size=(4, 4)
            )
            expected[block] += distance * images.shape[0] / 4
    torch.testing.assert_close(distances, expected, rtol=1e-10, atol=1e-10)
    png, blocks_csv, heads_csv = write_attention_distance(
        {"x": distances, "y": distances * 0.5}, tmp_path, uniform_distance=7.0
    )
    _assert_png(png)
    assert len(_read_csv(blocks_csv)) == 2 * DEPTH
    assert len(_read_csv(heads_csv)) == 2 * DEPTH * 2


def test_measurements__restore_every_submodule_train_flag() -> None:
    # A partly frozen model (train mode, its first block in eval mode) must come
    # back the same after each measurement, not wholly in train mode.
    vit = _tiny_vit().train()
    vit.blocks[0].eval()
    modes = [m.training for m in vit.modules()]
    images = torch.randn(2, 3, 16, 16)
    measure_vic(vit, [(images, images)])
    assert [m.training for m in vit.modules()] == modes
    measure_attention_distance(vit, [images])
    assert [m.training for m in vit.modules()] == modes


def test_tsne__small_set_and_writes(tmp_path: Path) -> None:
    vit = _tiny_vit()
    batches = [
        (torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2] * 2)) for _ in range(2)
    ]
    features, labels = embed(vit, batches)
    assert features.shape == (12, 32) and labels.tolist() == [0, 1, 2] * 4
    result = tsne(features, labels, perplexity=30.0, max_iter=250)  # clamped
    assert result.coordinates.shape == (12, 2)
    assert np.isfinite(result.coordinates).all()
    png, csv_path = write_tsne(
        {"model": result, "other": TSNEResult(result.coordinates * 2, labels)},
        tmp_path,
        class_names=["zero", "one", "two"],
    )
    _assert_png(png)
    rows = _read_csv(csv_path)
    assert len(rows) == 24
    assert {r["class"] for r in rows} == {"zero", "one", "two"}


def test_tsne__rejects_tiny_set() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        tsne(np.zeros((2, 4)), np.zeros(2))
