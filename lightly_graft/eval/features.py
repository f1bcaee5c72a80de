"""Frozen features of a backbone over a labelled dataset (for the eval protocols)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightly_graft.errors import DataError, GraftError
from lightly_graft.modules.embed import embed_batches


def extract_features(
    model: nn.Module, loader: DataLoader, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Embeds every batch of ``loader`` with ``model`` in eval mode, without grads.

    The model's train/eval flags are restored afterwards. Features are computed
    once per protocol run and reused across its hyperparameter grid.

    Args:
        model: Maps images (batch_size, C, H, W) to features (batch_size, dim).
        loader: Yields ``(images, labels, ...)`` batches.
        device: Where to run the model; defaults to the device of its parameters.

    Returns:
        features (num_samples, dim) float32 and labels (num_samples,) long, on CPU.
    """
    embedded = embed_batches(model, loader, device)
    if embedded is None:
        raise DataError(
            f"the loader over {loader.dataset!r} yielded no batches: the dataset is empty."
        )
    return embedded[0].cpu(), embedded[1].cpu()


def check_features(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
) -> None:
    """Raises GraftError unless train/test features and labels fit together."""
    _check_split("train", train_features, train_labels, num_classes)
    _check_split("test", test_features, test_labels, num_classes)
    _check_same_dim("train", train_features, "test", test_features)


def check_validation(
    features: Tensor | None, labels: Tensor | None, train: Tensor, num_classes: int
) -> bool:
    """Whether a validation split was given; raises GraftError unless it fits
    the training features (same dim, labels in range)."""
    if (features is None) != (labels is None):
        raise GraftError("give both val_features and val_labels, or neither.")
    if features is None or labels is None:
        return False
    _check_split("validation", features, labels, num_classes)
    _check_same_dim("validation", features, "train", train)
    return True


def _check_split(name: str, x: Tensor, y: Tensor, num_classes: int) -> None:
    if x.ndim != 2 or y.shape != x.shape[:1] or x.shape[0] == 0:
        raise GraftError(
            f"{name} features {tuple(x.shape)} and labels {tuple(y.shape)} must "
            "be non-empty (num_samples, dim) and (num_samples,)."
        )
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise GraftError(
            f"{name} labels span [{int(y.min())}, {int(y.max())}] but must lie "
            f"in [0, {num_classes}) for num_classes={num_classes}."
        )


def _check_same_dim(name: str, x: Tensor, other: str, reference: Tensor) -> None:
    if x.shape[1] != reference.shape[1]:
        raise GraftError(
            f"{name} features have dim {x.shape[1]} but {other} features "
            f"{reference.shape[1]}: they must come from the same backbone."
        )
