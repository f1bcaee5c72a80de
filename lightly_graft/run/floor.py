"""The random-init floor: kNN accuracy of the untrained backbone.

Measured once per run, before the first stage trains, on the first stage's
freshly initialised method, by the same ``KNNMonitor.evaluate`` with the same
bank, query set, k and temperature as the monitor during training, so the
report's gains are differences between numbers taken the same way. A backbone
that learned nothing scores the floor, not zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from lightly_graft.run.report import KNNPoint
from lightly_graft.training.knn_monitor import KNNMonitor


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
    """kNN top-1/top-5 of ``model`` (as epoch 0) and the seconds it took.

    The model is moved to ``device`` for the measurement and back after it;
    ``KNNMonitor.evaluate`` restores its train/eval modes and the RNG states.
    """
    monitor = KNNMonitor(
        bank_loader,
        query_loader,
        k=min(k, len(bank_loader.dataset)),  # type: ignore[arg-type]
        temperature=temperature,
        num_classes=num_classes,
    )
    original = next(model.parameters()).device
    model.to(device)
    try:
        result = monitor.evaluate(model)
    finally:
        model.to(original)
    return KNNPoint(0, result["top1"], result["top5"]), result["seconds"]
