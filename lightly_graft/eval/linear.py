"""Linear evaluation on frozen, cached features with a learning-rate sweep.

Protocol of MoCo v3 (Chen et al., 2021, main_lincls.py), which the Layer Grafted
paper follows (A.5): a linear classifier on frozen features, SGD with momentum
0.9, weight decay 0, cosine LR decay, 90 epochs, the LR swept and the best
reported. Deviations, for speed on cached features: no augmentation (features
are computed once), and the features are standardised with the training mean and
standard deviation, as MAE's linear probe does with ``BatchNorm1d(affine=False)``
before its head, so that one LR grid fits backbones of any feature scale.
lightly's LARS is available as ``optimizer="lars"`` (MAE's linear probe); note
that lightly's LARS skips the layer-wise scaling for parameters with weight decay
0, so with the default weight decay it behaves as SGD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lightly.utils.lars import LARS
from torch import Tensor, nn

from lightly_graft.errors import GraftError, format_options
from lightly_graft.eval.features import check_features, check_validation
from lightly_graft.functional.accuracy import top_accuracy, top_classes

OPTIMIZERS = ("sgd", "lars")
DEFAULT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class LinearResult:
    """Outcome of :func:`linear_eval`: the best LR and the accuracy of every LR."""

    best_lr: float
    top1: float
    top5: float
    per_lr: dict[float, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "best_lr": self.best_lr,
            "per_lr": {str(lr): acc for lr, acc in self.per_lr.items()},
        }


def linear_eval(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 90,
    batch_size: int = 256,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    val_features: Tensor | None = None,
    val_labels: Tensor | None = None,
) -> LinearResult:
    """Trains one linear classifier per LR on frozen features; reports the best.

    Args:
        train_features: (num_train, dim) frozen features.
        train_labels: (num_train,) labels in [0, num_classes).
        test_features: (num_test, dim) frozen features.
        test_labels: (num_test,) labels.
        num_classes: Number of classes.
        lrs: LR grid (for ``batch_size``; not rescaled). Without a validation
            split the best LR on the test set is reported, as in the paper's
            sweep; ``per_lr`` has all of them.
        epochs: Training epochs per LR (paper: 90).
        batch_size: Mini-batch size.
        optimizer: ``"sgd"`` or ``"lars"`` (lightly's LARS).
        momentum: Momentum of either optimizer.
        weight_decay: Weight decay (paper, following MoCo v3: 0).
        seed: Seeds the classifier initialisation and the batch order.
        val_features: (num_val, dim) features of a validation split held out of
            the training set. When given, the LR is chosen by the validation
            top-1 and the test accuracy at that LR is reported (``per_lr`` then
            also holds each LR's ``val_top1``), so the test set never picks a
            hyperparameter.
        val_labels: (num_val,) labels of ``val_features``.

    Returns:
        A :class:`LinearResult` with accuracies as fractions in [0, 1].
    """
    check_features(
        train_features, train_labels, test_features, test_labels, num_classes
    )
    if optimizer not in OPTIMIZERS:
        raise GraftError(
            f"unknown linear-eval optimizer '{optimizer}'; valid: "
            f"{format_options(OPTIMIZERS)}."
        )
    if not lrs or min(lrs) <= 0 or epochs < 1 or batch_size < 1:
        raise GraftError(
            f"need a non-empty grid of positive LRs, epochs >= 1 and batch_size >= 1, "
            f"got lrs={list(lrs)}, epochs={epochs}, batch_size={batch_size}."
        )
    validate = check_validation(val_features, val_labels, train_features, num_classes)
    mean = train_features.mean(dim=0)
    std = train_features.std(dim=0) + 1e-6
    train_x = (train_features.float() - mean) / std
    test_x = (test_features.float() - mean) / std
    per_lr: dict[float, dict[str, float]] = {}
    for lr in lrs:
        classifier = _train(
            train_x,
            train_labels.long(),
            num_classes,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
        )
        per_lr[lr] = _accuracy(classifier, test_x, test_labels.long())
        if validate:
            val_x = (val_features.float() - mean) / std  # type: ignore[union-attr]
            val = _accuracy(classifier, val_x, val_labels.long())  # type: ignore[union-attr]
            per_lr[lr]["val_top1"] = val["top1"]
    key = "val_top1" if validate else "top1"
    best_lr = max(per_lr, key=lambda lr: per_lr[lr][key])
    best = per_lr[best_lr]
    return LinearResult(
        best_lr=best_lr, top1=best["top1"], top5=best["top5"], per_lr=per_lr
    )


def _train(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    seed: int,
) -> nn.Linear:
    """One linear classifier, MoCo v3 init (normal std 0.01, zero bias)."""
    generator = torch.Generator().manual_seed(seed)
    classifier = nn.Linear(features.shape[1], num_classes).to(features.device)
    with torch.no_grad():
        weight = torch.randn(classifier.weight.shape, generator=generator) * 0.01
        classifier.weight.copy_(weight)
        classifier.bias.zero_()
    opt_cls = LARS if optimizer == "lars" else torch.optim.SGD
    opt = opt_cls(
        classifier.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    steps_per_epoch = -(-features.shape[0] // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * steps_per_epoch
    )
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator)
        for start in range(0, features.shape[0], batch_size):
            batch = order[start : start + batch_size].to(features.device)
            loss = F.cross_entropy(classifier(features[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return classifier


@torch.no_grad()
def _accuracy(classifier: nn.Linear, features: Tensor, labels: Tensor) -> dict:
    top1, top5 = top_accuracy(top_classes(classifier(features)), labels)
    return {"top1": top1, "top5": top5}
