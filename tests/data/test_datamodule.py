from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_graft.data import (
    SSLDataModule,
    augmentation_defaults,
    eval_transform,
    mae_transform,
    two_view_transform,
)
from lightly_graft.errors import DataError

NORMALIZE = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _image_dir(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")


def _module(root: Path, **kwargs: object) -> SSLDataModule:
    options: dict[str, object] = {
        "data": str(root),
        "train_transform": two_view_transform(
            input_size=16, min_scale=0.2, normalize=NORMALIZE
        ),
        "eval_transform": eval_transform(input_size=16, normalize=NORMALIZE),
        "batch_size": 4,
        "eval_batch_size": 5,
        "knn_bank_size": 7,
        "knn_query_size": None,
        "holdout_fraction": 0.2,
    }
    options.update(kwargs)
    return SSLDataModule(**options)  # type: ignore[arg-type]


def test_datamodule__views_bank_and_query(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _image_dir(tmp_path, per_class=5)  # 15 images: 12 train, 3 held out
    module = _module(tmp_path)
    views, labels = next(iter(module.train_dataloader()))
    assert len(views) == 2
    assert all(v.shape == (4, 3, 16, 16) for v in views)
    assert labels.shape == (4,)
    assert len(module.train_dataloader()) == 3  # 12 // 4, last batch dropped
    bank = [b for b in module.knn_bank_dataloader()]
    query = [b for b in module.knn_query_dataloader()]
    assert sum(len(y) for _, y in bank) == 7
    assert sum(len(y) for _, y in query) == 3
    assert bank[0][0].shape == (5, 3, 16, 16)
    assert module.num_classes == 3
    assert module.val_dataloader() == []


def test_datamodule__eval_loaders_are_deterministic(tmp_path: Path) -> None:
    _image_dir(tmp_path, per_class=5)
    first = next(iter(_module(tmp_path).knn_bank_dataloader()))
    second = next(iter(_module(tmp_path).knn_bank_dataloader()))
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    assert torch.equal(first[1], second[1])


def test_datamodule__online_eval_gives_the_query_set(tmp_path: Path) -> None:
    _image_dir(tmp_path, per_class=5)
    module = _module(tmp_path, online_eval=True)
    images, labels = next(iter(module.val_dataloader()))
    assert images.shape[1:] == (3, 16, 16)


def test_datamodule__mae_transform_gives_one_view(tmp_path: Path) -> None:
    _image_dir(tmp_path, per_class=5)
    module = _module(
        tmp_path,
        train_transform=mae_transform(
            input_size=16, min_scale=0.2, normalize=NORMALIZE
        ),
    )
    views, _ = next(iter(module.train_dataloader()))
    assert len(views) == 1 and views[0].shape == (4, 3, 16, 16)


def test_datamodule__fewer_images_than_a_batch_is_data_error(tmp_path: Path) -> None:
    _image_dir(tmp_path, per_class=2)
    with pytest.raises(DataError, match="fewer than one batch"):
        _module(tmp_path, batch_size=64).setup()


def test_augmentation_defaults__small_images_switch_blur_off() -> None:
    assert augmentation_defaults(28)["blur_probs"] == (0.0, 0.0)
    assert augmentation_defaults(224)["blur_probs"] == (1.0, 0.1)
    assert augmentation_defaults(224)["min_scale"] == 0.08
