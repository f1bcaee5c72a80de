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


def _batched_module(root: Path, **kwargs: object) -> SSLDataModule:
    from lightly_graft.data import batched_views, decode_transform

    return _module(
        root,
        train_transform=decode_transform(input_size=32),
        batch_transform=batched_views.two_views(
            input_size=32, min_scale=0.2, normalize=NORMALIZE
        ),
        eval_transform=eval_transform(input_size=32, normalize=NORMALIZE),
        **kwargs,
    )


def test_datamodule__batched_loader_yields_decoded_images(tmp_path: Path) -> None:
    _image_dir(tmp_path, per_class=5)  # 20 x 24 px: resized once to 32 x 32
    module = _batched_module(tmp_path)
    batch = next(iter(module.train_dataloader()))
    images, labels = batch
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    views, same_labels = module.training_views(batch)
    assert len(views) == 2 and all(v.shape == (4, 3, 32, 32) for v in views)
    assert views[0].dtype == torch.float32 and same_labels is labels
    # the kNN sets keep the eval transform
    bank_images, _ = next(iter(module.knn_bank_dataloader()))
    assert bank_images.dtype == torch.float32


def _fit_batched(root: Path, steps: int, ckpt_path: str | None = None):
    import pytorch_lightning as pl
    from graft_testing import tiny_method, tiny_trainer

    pl.seed_everything(0, verbose=False)
    method = tiny_method("grafted_moco", num_classes=0, batch_size=4)
    module = _batched_module(root, online_eval=True)
    trainer = tiny_trainer(max_steps=steps, limit_val_batches=1)
    trainer.fit(method, datamodule=module, ckpt_path=ckpt_path)
    return trainer, method, module


def test_datamodule__batched_views_in_a_fit_are_deterministic(tmp_path: Path) -> None:
    """on_after_batch_transfer makes the views (validation batches pass through
    unchanged); a seeded CPU fit is repeatable; the stream is in the checkpoint."""
    _image_dir(tmp_path, per_class=5)
    _, first, module = _fit_batched(tmp_path, steps=3)
    _, second, _ = _fit_batched(tmp_path, steps=3)
    for a, b in zip(
        first.state_dict().values(), second.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = module.state_dict()["batch_views"]["rng_state"]
    fresh = _batched_module(tmp_path)
    assert not torch.equal(fresh.state_dict()["batch_views"]["rng_state"], state)
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh.state_dict()["batch_views"]["rng_state"], state)


def test_datamodule__batched_views_stream_is_restored_on_resume(
    tmp_path: Path,
) -> None:
    """The stream is saved in the checkpoint and, on resume, continues from
    there (not re-seeded): one more step advances it by exactly one batch."""
    _image_dir(tmp_path / "data", per_class=5)
    trainer, _, module = _fit_batched(tmp_path / "data", steps=2)
    checkpoint = tmp_path / "two.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["SSLDataModule"]
    assert torch.equal(
        saved["batch_views"]["rng_state"],
        module.state_dict()["batch_views"]["rng_state"],
    )
    _, _, resumed = _fit_batched(tmp_path / "data", steps=3, ckpt_path=str(checkpoint))
    expected = _batched_module(tmp_path / "data")
    expected.load_state_dict(saved)
    expected.training_views(next(iter(expected.train_dataloader())))
    assert torch.equal(
        resumed.state_dict()["batch_views"]["rng_state"],
        expected.state_dict()["batch_views"]["rng_state"],
    )
