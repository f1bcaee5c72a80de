"""Running a model over labelled batches for its features (kNN, eval, analysis).

``eval_mode`` restores every submodule's own train/eval flag afterwards (a
model that was partly frozen in eval mode stays so); ``embed_batches`` is the
one loop that embeds ``(images, labels, ...)`` batches in eval mode without
gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Puts ``module`` in eval mode; restores every submodule's own flag after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def embed_batches(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor] | None:
    """Features and labels of ``(images, labels, ...)`` batches, in order.

    Args:
        model: Maps images (batch_size, C, H, W) to features (batch_size, ...).
        batches: Labelled batches (a DataLoader, or already on the device).
        device: Where the images go; default: the device of the model's
            parameters (CPU for a model without parameters).

    Returns:
        features (num_samples, dim) float32 and labels (num_samples,) long, both
        on ``device``; None when there were no batches.
    """
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    features, labels = [], []
    with eval_mode(model), torch.no_grad():
        for batch in batches:
            images = batch[0].to(device)
            features.append(model(images).flatten(start_dim=1).float())
            labels.append(torch.as_tensor(batch[1], device=device).long())
    if not features:
        return None
    return torch.cat(features), torch.cat(labels)
