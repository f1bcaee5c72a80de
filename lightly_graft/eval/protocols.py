"""Running one evaluation protocol of the paper on a backbone.

``evaluate(protocol, vit, settings, device=..., output=...)`` opens the data
(``default``: the embedded Fashion-MNIST, or an ImageFolder directory; its
training split for the bank, the labelled subsets or fine-tuning, its held-out
split for the accuracy), embeds it once for the frozen-feature protocols (knn,
linear, fewshot) or fine-tunes (finetune, partial), and returns the metrics.
``lightly-graft eval`` is its command line; :class:`EvalSettings` holds the
defaults of its flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightly_graft.errors import DataError
from lightly_graft.functional.knn import Backend

if TYPE_CHECKING:
    import torch
    from timm.models.vision_transformer import VisionTransformer

PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "partial")


@dataclass(frozen=True)
class EvalSettings:
    """Settings of :func:`evaluate` (``lightly-graft eval`` flags of the same
    names). ``epochs`` None: linear 90, finetune 100."""

    data: str = "default"
    batch_size: int = 256
    num_workers: int = 0
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    k: int = 200
    temperature: float = 0.1
    knn_backend: Backend = "auto"
    epochs: int | None = None
    lrs: Sequence[float] | None = None
    optimizer: str = "sgd"
    base_lr: float = 5e-4
    layer_decay: float = 0.6
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    freeze_blocks: int | None = None
    label_fraction: float | None = None
    fractions: Sequence[float] = (0.01, 0.1)
    cs: Sequence[float] = (0.1, 1.0, 10.0)
    subsets: Path | None = None


def evaluate(
    protocol: str,
    vit: VisionTransformer,
    settings: EvalSettings,
    *,
    device: torch.device,
    output: Path,
) -> dict[str, Any]:
    """Runs ``protocol`` on the backbone ``vit`` and returns its metrics.

    The frozen-feature protocols (knn, linear, fewshot) embed the training and
    held-out splits once; finetune and partial train a copy of the backbone
    with a linear head (:func:`~lightly_graft.eval.finetune.finetune`).
    """
    from lightly_graft import eval as protocols

    if protocol in ("finetune", "partial"):
        return _finetune(settings, vit, device, output)
    train_set, test_set, num_classes = _datasets(settings, vit, augment=False)
    vit.to(device)
    train_x, train_y = protocols.extract_features(vit, _loader(settings, train_set))
    test_x, test_y = protocols.extract_features(vit, _loader(settings, test_set))
    data = (train_x, train_y, test_x, test_y, num_classes)
    if protocol == "knn":
        k = min(settings.k, train_x.shape[0])
        return protocols.knn_eval(
            *data, k=k, temperature=settings.temperature, backend=settings.knn_backend
        )
    if protocol == "linear":
        lrs = settings.lrs or protocols.linear.DEFAULT_LRS
        return protocols.linear_eval(
            train_x.to(device),
            train_y.to(device),
            test_x.to(device),
            test_y.to(device),
            num_classes,
            lrs=lrs,
            epochs=settings.epochs or 90,
            batch_size=settings.batch_size,
            optimizer=settings.optimizer,
            weight_decay=0.0,
            seed=settings.seed,
        ).as_dict()
    return protocols.fewshot_eval(
        *data,
        fractions=settings.fractions,
        seed=settings.seed,
        subsets_path=settings.subsets or output / "fewshot_subsets.json",
        cs=settings.cs,
    )


def _finetune(
    settings: EvalSettings, vit: Any, device: Any, output: Path
) -> dict[str, Any]:
    from lightly_graft.eval.finetune import FinetuneSettings, finetune

    train_set, test_set, num_classes = _datasets(settings, vit, augment=True)
    labelled: dict[str, Any] = {}
    if settings.label_fraction is not None:
        train_set, labelled = _labelled(settings, train_set, output)
    schedule = FinetuneSettings(
        epochs=settings.epochs or 100,
        base_lr=settings.base_lr,
        layer_decay=settings.layer_decay,
        weight_decay=settings.weight_decay,
        warmup_epochs=settings.warmup_epochs,
        frozen_blocks=settings.freeze_blocks or 0,
        label_smoothing=settings.label_smoothing,
    )
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    devices = [device.index or 0] if device.type == "cuda" else 1
    metrics = finetune(
        vit,
        _loader(settings, train_set, shuffle=True),
        _loader(settings, test_set),
        num_classes,
        schedule,
        accelerator=accelerator,
        devices=devices,
        output=output,
        seed=settings.seed,
    )
    return {**metrics, **labelled}


def _labelled(
    settings: EvalSettings, train_set: Any, output: Path
) -> tuple[Any, dict[str, Any]]:
    """The class-balanced labelled subset of ``label_fraction`` (semi-supervised
    fine-tuning), the same draw and file format as the fewshot protocol's."""
    import numpy as np
    from torch.utils.data import Subset

    from lightly_graft.eval.fewshot import labelled_subsets

    fraction = settings.label_fraction
    assert fraction is not None, "only called with a label fraction"
    path = settings.subsets or output / "fewshot_subsets.json"
    labels = np.asarray(_targets(train_set))
    indices = labelled_subsets(labels, [fraction], settings.seed, path)
    chosen = indices[float(fraction)].tolist()
    info = {"label_fraction": fraction, "num_labelled": len(chosen)}
    return Subset(train_set, chosen), {**info, "subsets": str(path)}


def _targets(dataset: Any) -> list[int]:
    """Labels of a dataset (``targets``) or of a ``Subset`` of one, without
    loading images."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        parent = _targets(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    return list(dataset.targets)


def _datasets(settings: EvalSettings, vit: Any, *, augment: bool) -> tuple:
    """Train and held-out splits (seeded subsets if limited) and the class count."""
    from torchvision import transforms as T

    from lightly_graft.data import (
        default_normalize,
        eval_transform,
        open_dataset,
        seeded_subset,
    )

    size = vit.patch_embed.img_size[0]
    normalize = default_normalize(settings.data)
    test_transform = eval_transform(input_size=size, normalize=normalize)
    train_transform = test_transform
    if augment:  # fine-tuning: MAE's crop and flip (no RandAugment/mixup)
        train_transform = T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.08, 1.0)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(mean=normalize["mean"], std=normalize["std"]),
            ]
        )
    train = open_dataset(
        settings.data, train=True, transform=train_transform, seed=settings.seed
    )
    test = open_dataset(
        settings.data, train=False, transform=test_transform, seed=settings.seed
    )
    num_classes = len(train.classes)  # type: ignore[attr-defined]
    if num_classes < 2:
        raise DataError(
            f"'{settings.data}' has {num_classes} class: every protocol's accuracy "
            "would be meaningless (100%); give a dataset with at least 2 classes"
        )
    return (
        seeded_subset(train, settings.limit_train, settings.seed),
        seeded_subset(test, settings.limit_test, settings.seed),
        num_classes,
    )


def _loader(settings: EvalSettings, dataset: Any, shuffle: bool = False) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=shuffle,
        num_workers=settings.num_workers,
        drop_last=False,
    )
