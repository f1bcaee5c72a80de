"""Evaluation protocols on feature tensors: kNN, linear probe, few-shot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightly_graft.errors import DataError, GraftError
from lightly_graft.eval import (
    extract_features,
    fewshot_eval,
    fewshot_subset,
    knn_eval,
    linear_eval,
    load_subsets,
)


def _separable(num: int, dim: int = 16, num_classes: int = 5, seed: int = 0):
    """Labels of a random linear teacher: linearly separable by construction."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(7))
    features = torch.randn(num, dim, generator=generator) * 3.0 + 1.0
    return features, (features @ teacher).argmax(dim=1)


def _clustered(num: int, num_classes: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.randn(num_classes, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(num) % num_classes  # balanced
    return centroids[labels] + 0.7 * torch.randn(num, 8, generator=generator), labels


def test_linear_eval__separable_set_reaches_95_percent():
    train_x, train_y = _separable(1000, seed=0)
    test_x, test_y = _separable(500, seed=1)
    result = linear_eval(
        train_x, train_y, test_x, test_y, 5, lrs=(0.001, 1.0), epochs=30
    )
    assert result.top1 >= 0.95
    assert result.best_lr == 1.0  # 0.001 is far too small for 30 epochs
    assert set(result.per_lr) == {0.001, 1.0}
    assert result.top1 == max(acc["top1"] for acc in result.per_lr.values())
    assert result.top5 >= result.top1


def test_linear_eval__lars_and_determinism():
    train_x, train_y = _separable(600, seed=0)
    test_x, test_y = _separable(200, seed=1)
    args = (train_x, train_y, test_x, test_y, 5)
    first = linear_eval(*args, lrs=(0.1,), epochs=5, optimizer="lars", seed=3)
    again = linear_eval(*args, lrs=(0.1,), epochs=5, optimizer="lars", seed=3)
    assert first == again
    assert first.top1 > 0.8


def test_linear_eval__rejects_bad_input():
    x, y = _separable(50)
    with pytest.raises(GraftError, match="unknown linear-eval optimizer 'adam'"):
        linear_eval(x, y, x, y, 5, optimizer="adam")
    with pytest.raises(GraftError, match=r"labels span \[0, 4\]"):
        linear_eval(x, y, x, y, 3)
    with pytest.raises(GraftError, match="same backbone"):
        linear_eval(x, y, x[:, :4], y, 5)


def test_fewshot_subset__class_balanced_and_deterministic():
    labels = np.repeat(np.arange(10), 200)  # 2000 samples, 200 per class
    subset = fewshot_subset(labels, 0.01, seed=0)
    assert np.bincount(labels[subset], minlength=10).tolist() == [2] * 10
    subset10 = fewshot_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[subset10], minlength=10).tolist() == [20] * 10
    assert len(set(subset10.tolist())) == subset10.size  # no duplicates
    np.testing.assert_array_equal(fewshot_subset(labels, 0.1, seed=0), subset10)
    assert not np.array_equal(fewshot_subset(labels, 0.1, seed=1), subset10)


def test_fewshot_subset__disjoint_from_the_evaluation_indices():
    labels = np.repeat(np.arange(4), 50)
    evaluation = np.arange(0, 200, 2)  # every other sample is held out
    subset = fewshot_subset(labels, 0.2, seed=0, exclude=evaluation)
    assert not set(subset.tolist()) & set(evaluation.tolist())
    assert np.bincount(labels[subset], minlength=4).tolist() == [5] * 4


def test_fewshot_subset__rejects_bad_fraction():
    with pytest.raises(GraftError, match=r"fraction must be in \(0, 1\], got 1.5"):
        fewshot_subset(np.zeros(10), 1.5, seed=0)


def test_fewshot_eval__saves_and_reuses_subsets(tmp_path):
    train_x, train_y = _clustered(400, seed=0)
    test_x, test_y = _clustered(200, seed=1)
    path = tmp_path / "subsets.json"
    result = fewshot_eval(
        train_x, train_y, test_x, test_y, 4, fractions=(0.05, 0.5), subsets_path=path
    )
    assert set(result) == {"5%", "50%"}
    assert result["5%"]["num_labelled"] == 20 and result["50%"]["num_labelled"] == 200
    assert result["50%"]["top1"] > 0.8
    saved = json.loads(path.read_text())
    assert saved["seed"] == 0 and saved["num_samples"] == 400
    subsets = load_subsets(path, num_samples=400)
    assert np.bincount(train_y.numpy()[subsets[0.05]]).tolist() == [5] * 4
    # A second run reads the file: another seed does not change the subsets.
    again = fewshot_eval(
        train_x,
        train_y,
        test_x,
        test_y,
        4,
        fractions=(0.05,),
        seed=9,
        subsets_path=path,
    )
    assert again["5%"] == result["5%"]
    with pytest.raises(DataError, match="drawn from 400 samples"):
        load_subsets(path, num_samples=401)


def test_knn_eval__returns_fractions():
    train_x, train_y = _clustered(200, seed=0)
    test_x, test_y = _clustered(100, seed=1)
    result = knn_eval(train_x, train_y, test_x, test_y, 4, k=20)
    assert 0.7 < result["top1"] <= result["top5"] <= 1.0
    assert result["k"] == 20


def test_extract_features__eval_mode_features_and_modes_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    model[1].eval()
    images = torch.randn(10, 2, 2)
    loader = DataLoader(TensorDataset(images, torch.arange(10)), batch_size=4)
    features, labels = extract_features(model, loader)
    assert labels.tolist() == list(range(10))
    # Dropout is off during extraction: features are the plain linear map.
    with torch.no_grad():
        expected = model[1](images.flatten(1))
    torch.testing.assert_close(features, expected)
    assert [m.training for m in model.modules()] == [True, True, False, True]
