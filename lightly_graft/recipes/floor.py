"""The random-init floor: kNN accuracy of the untrained backbone.

Measured once per run, before the first stage trains, on the first stage's
freshly initialised method with the same bank, query set, k and temperature as
the kNN monitor, so the report's gains are differences between numbers taken
the same way. A backbone that learned nothing scores the floor, not zero.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightly_graft.recipes.report import KNNPoint


@torch.no_grad()
def embed(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Features (N, D) and labels (N,) of a labelled loader, model in eval mode."""
    was_training = model.training
    model.eval()
    features, labels = [], []
    for images, targets in loader:
        features.append(model(images.to(device)).float().cpu())
        labels.append(targets)
    model.train(was_training)
    return torch.cat(features), torch.cat(labels)


def measure_knn(
    model: nn.Module,
    bank_loader: DataLoader,
    query_loader: DataLoader,
    *,
    num_classes: int,
    k: int,
    temperature: float,
    device: torch.device | str = "cpu",
) -> tuple[KNNPoint, float]:
    """kNN top-1/top-5 of ``model`` (epoch 0) and the seconds it took."""
    from lightly_graft.functional.knn import knn_accuracy, knn_classify

    start = time.perf_counter()
    device = torch.device(device)
    original = next(model.parameters()).device
    model.to(device)
    bank, bank_labels = embed(model, bank_loader, device)
    queries, query_labels = embed(model, query_loader, device)
    model.to(original)
    predictions = knn_classify(
        queries,
        bank,
        bank_labels,
        num_classes=num_classes,
        k=min(k, len(bank)),
        temperature=temperature,
    )
    top1, top5 = knn_accuracy(predictions, query_labels)
    return KNNPoint(epoch=0, top1=top1, top5=top5), time.perf_counter() - start
