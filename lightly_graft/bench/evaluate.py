"""The metrics of one trained backbone, with every hyperparameter chosen on a
validation split held out of the training set.

Frozen, un-augmented features of the whole training split and the test split
are extracted once. A seeded ``val_fraction`` of the training images (the same
for every arm and seed: it depends only on ``evaluation.seed``) is held out:

- ``knn``: weighted kNN (fixed k and temperature: nothing to choose) of the test
  images against the remaining training images;
- ``linear``: :func:`~lightly_graft.eval.linear.linear_eval` on the remaining
  training images, the LR chosen by the validation top-1;
- ``fewshot_1%`` / ``fewshot_10%``: :func:`~lightly_graft.eval.fewshot.fewshot_eval`
  with class-balanced subsets of the remaining training images, C chosen by the
  validation top-1.

The test accuracy at the chosen value is what the tables report.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightly_graft.bench.suite import Evaluation
from lightly_graft.data import eval_transform, open_dataset, seeded_subset
from lightly_graft.eval import extract_features, fewshot_eval, knn_eval, linear_eval


def finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of ``model`` is finite."""
    return all(
        bool(torch.isfinite(t).all())
        for t in [*model.parameters(), *model.buffers()]
        if t.is_floating_point()
    )


def val_split(
    num_samples: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of a seeded hold-out, both sorted."""
    order = np.random.default_rng(seed).permutation(num_samples)
    size = max(1, round(fraction * num_samples))
    return np.sort(order[size:]), np.sort(order[:size])


def features(
    vit: torch.nn.Module,
    data: str,
    normalize: dict[str, list[float]],
    *,
    batch_size: int,
    device: torch.device,
    train_size: int | None = None,
    test_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Train and test features and labels of a data spec, and the class count."""
    size = int(vit.patch_embed.img_size[0])  # type: ignore[union-attr, index]
    transform = eval_transform(input_size=size, normalize=normalize)
    train = open_dataset(data, train=True, transform=transform)
    test = open_dataset(data, train=False, transform=transform)
    classes = len(train.classes)  # type: ignore[attr-defined]
    train = seeded_subset(train, train_size, 0)
    test = seeded_subset(test, test_size, 0)
    vit.to(device)
    train_x, train_y = extract_features(vit, DataLoader(train, batch_size=batch_size))
    test_x, test_y = extract_features(vit, DataLoader(test, batch_size=batch_size))
    return train_x, train_y, test_x, test_y, classes


def evaluate(
    vit: torch.nn.Module,
    data: str,
    normalize: dict[str, list[float]],
    settings: Evaluation,
    *,
    device: torch.device,
    workdir: Path,
) -> dict[str, Any]:
    """Runs the suite's protocols on a backbone; returns metrics and details.

    Returns:
        ``{"metrics": {name: top-1 in [0, 1]}, "details": {...}, "seconds": s}``.
    """
    start = time.perf_counter()
    train_x, train_y, test_x, test_y, num_classes = features(
        vit,
        data,
        normalize,
        batch_size=settings.batch_size,
        device=device,
        train_size=settings.train_size,
        test_size=settings.test_size,
    )
    keep, held = val_split(train_x.shape[0], settings.val_fraction, settings.seed)
    fit_x, fit_y = train_x[keep], train_y[keep]
    val_x, val_y = train_x[held], train_y[held]
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {
        "num_train": int(keep.size),
        "num_val": int(held.size),
        "num_test": int(test_x.shape[0]),
    }
    if "knn" in settings.protocols:
        k = min(settings.knn.k, fit_x.shape[0])
        result = knn_eval(
            fit_x,
            fit_y,
            test_x,
            test_y,
            num_classes,
            k=k,
            temperature=settings.knn.temperature,
        )
        val = knn_eval(
            fit_x,
            fit_y,
            val_x,
            val_y,
            num_classes,
            k=k,
            temperature=settings.knn.temperature,
        )
        metrics["knn"] = result["top1"]
        details["knn"] = {**result, "val_top1": val["top1"]}
    if "linear" in settings.protocols:
        linear = linear_eval(
            fit_x.to(device),
            fit_y.to(device),
            test_x.to(device),
            test_y.to(device),
            num_classes,
            lrs=settings.linear.lrs,
            epochs=settings.linear.epochs,
            batch_size=settings.linear.batch_size,
            seed=settings.seed,
            val_features=val_x.to(device),
            val_labels=val_y.to(device),
        )
        metrics["linear"] = linear.top1
        details["linear"] = linear.as_dict()
    if "fewshot" in settings.protocols:
        shots = fewshot_eval(
            fit_x,
            fit_y,
            test_x,
            test_y,
            num_classes,
            fractions=settings.fewshot.fractions,
            seed=settings.seed,
            subsets_path=workdir / "fewshot_subsets.json",
            cs=settings.fewshot.cs,
            val_features=val_x,
            val_labels=val_y,
        )
        for name, result in shots.items():
            metrics[f"fewshot_{name}"] = result["top1"]
        details["fewshot"] = shots
    if "finetune" in settings.protocols:
        tuned = finetune(vit, data, settings, device=device, workdir=workdir)
        metrics["finetune"] = tuned["top1"]
        details["finetune"] = tuned
    return {
        "metrics": metrics,
        "details": details,
        "seconds": time.perf_counter() - start,
    }


def finetune(
    vit: torch.nn.Module,
    data: str,
    settings: Evaluation,
    *,
    device: torch.device,
    workdir: Path,
) -> dict[str, Any]:
    """Fine-tunes a copy of the backbone on the suite's labelled subset
    (:func:`lightly_graft.eval.protocols.evaluate`, protocol ``finetune``)."""
    from lightly_graft.eval.protocols import EvalSettings
    from lightly_graft.eval.protocols import evaluate as run_protocol

    tune = settings.finetune
    eval_settings = EvalSettings(
        data=data,
        batch_size=tune.batch_size,
        seed=settings.seed,
        limit_train=settings.train_size,
        limit_test=settings.test_size,
        epochs=tune.epochs,
        base_lr=tune.base_lr,
        layer_decay=tune.layer_decay,
        warmup_epochs=tune.warmup_epochs,
        label_fraction=tune.label_fraction,
        subsets=workdir / "finetune_subsets.json",
    )
    output = workdir / "finetune_logs"
    tuned: Any = copy.deepcopy(vit).cpu()  # trained in place: keep the backbone
    return run_protocol(
        "finetune",
        tuned,
        eval_settings,
        device=device,
        output=output,
    )
