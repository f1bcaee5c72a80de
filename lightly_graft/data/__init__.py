"""Datasets, transforms and the data module.

``open_dataset("default" | DIR, train=...)`` gives ``(PIL RGB image, label)`` pairs:
``"default"`` is the embedded Fashion-MNIST (Debian ``dataset-fashion-mnist``),
anything else an ``ImageFolder``-style directory with a held-out split.
"""

from __future__ import annotations

from lightly_graft.data import batched_views
from lightly_graft.data.batched_views import BatchedViews
from lightly_graft.data.datamodule import SSLDataModule, seeded_subset
from lightly_graft.data.datasets import (
    DEFAULT,
    default_normalize,
    native_image_size,
    open_dataset,
)
from lightly_graft.data.fashion_mnist import FashionMNIST, read_idx
from lightly_graft.data.folders import LabelledImages, open_image_folder
from lightly_graft.data.transforms import (
    augmentation_defaults,
    decode_transform,
    eval_transform,
    mae_transform,
    two_view_transform,
)

__all__ = [
    "BatchedViews",
    "DEFAULT",
    "FashionMNIST",
    "LabelledImages",
    "SSLDataModule",
    "augmentation_defaults",
    "batched_views",
    "decode_transform",
    "default_normalize",
    "eval_transform",
    "mae_transform",
    "native_image_size",
    "open_dataset",
    "open_image_folder",
    "read_idx",
    "seeded_subset",
    "two_view_transform",
]
