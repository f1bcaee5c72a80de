"""``lightly-graft eval``: evaluate a backbone checkpoint with one of the paper's
protocols (kNN, linear, few-shot, fine-tune, partial fine-tune).

The checkpoint is read in the named format (``--format``, default ``timm``: a
run's ``backbone.pt`` with ``backbone.json`` beside it) by core's
``load_backbone``; the data is ``default`` (embedded Fashion-MNIST) or an
ImageFolder directory, its training split for training/bank/labelled subsets and
its held-out split for the accuracy. Writes ``metrics.json`` and ``metrics.md``
to ``--output`` (default: ``eval-<protocol>`` beside the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lightly_graft.training.checkpoints import FORMATS

PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "partial")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a backbone checkpoint: knn, linear, fewshot, finetune, partial",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="backbone checkpoint file")
    parser.add_argument("--data", default="default", help="'default' or a directory")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--format", default="timm", choices=FORMATS)
    parser.add_argument(
        "--model",
        default=None,
        help="architecture when the file does not store it and has no backbone.json: "
        'a timm name or JSON, e.g. \'{"name": "vit_tiny_patch16_224", "img_size": 32}\'',
    )
    parser.add_argument("--output", type=Path, default=None, help="output directory")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-train", type=int, default=None, help="subset size")
    parser.add_argument("--limit-test", type=int, default=None, help="subset size")
    group = parser.add_argument_group("knn")
    group.add_argument("--k", type=int, default=200)
    group.add_argument("--temperature", type=float, default=0.1)
    group.add_argument(
        "--knn-backend", default="auto", choices=("auto", "faiss", "torch")
    )
    group = parser.add_argument_group("linear / finetune / partial")
    group.add_argument(
        "--epochs", type=int, default=None, help="linear 90, finetune 100"
    )
    group.add_argument(
        "--lrs", type=float, nargs="+", default=None, help="linear LR grid"
    )
    group.add_argument("--optimizer", default="sgd", choices=("sgd", "lars"))
    group.add_argument("--base-lr", type=float, default=5e-4)
    group.add_argument("--layer-decay", type=float, default=0.6)
    group.add_argument("--weight-decay", type=float, default=0.05)
    group.add_argument("--warmup-epochs", type=float, default=5.0)
    group.add_argument("--label-smoothing", type=float, default=0.1)
    group.add_argument(
        "--freeze-blocks", type=int, default=None, help="partial: blocks to freeze"
    )
    group.add_argument(
        "--label-fraction",
        type=float,
        default=None,
        help="finetune/partial: train on a class-balanced fraction of the labels "
        "(paper: 0.1 for its 10%% semi-supervised result), drawn with --seed and "
        "saved like the fewshot subsets (--subsets)",
    )
    group = parser.add_argument_group("fewshot")
    group.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    group.add_argument("--cs", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    group.add_argument(
        "--subsets", type=Path, default=None, help="subsets JSON (read or written)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from lightly_graft.training.checkpoints import load_backbone

    _check_args(args)
    vit, spec = load_backbone(args.checkpoint, args.format, spec=_model_spec(args))
    output = args.output or args.checkpoint.parent / f"eval-{args.protocol}"
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    metrics = _evaluate(args, vit, output)
    record = {
        "checkpoint": str(args.checkpoint),
        "format": args.format,
        "backbone": spec.to_dict(),
        "data": str(args.data),
        "protocol": args.protocol,
        "seconds": round(time.perf_counter() - start, 2),
        "metrics": metrics,
    }
    (output / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    table = _markdown(record)
    (output / "metrics.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {output / 'metrics.json'} and {output / 'metrics.md'}")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    from lightly_graft.errors import GraftError

    if args.protocol == "partial" and args.freeze_blocks is None:
        raise GraftError(
            "--protocol partial needs --freeze-blocks B (the first B blocks and the "
            "patch embedding stay frozen, paper Fig 5)."
        )
    if args.protocol != "partial" and args.freeze_blocks:
        raise GraftError(
            f"--freeze-blocks {args.freeze_blocks} only applies to --protocol partial."
        )
    if args.label_fraction is not None:
        if args.protocol not in ("finetune", "partial"):
            raise GraftError(
                f"--label-fraction {args.label_fraction} only applies to --protocol "
                "finetune or partial (fewshot takes --fractions)."
            )
        if not 0 < args.label_fraction <= 1:
            raise GraftError(
                f"--label-fraction must be in (0, 1], got {args.label_fraction}."
            )
    for name in ("batch_size", "k", "epochs", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise GraftError(f"--{name.replace('_', '-')} must be >= 1, got {value}.")


def _model_spec(args: argparse.Namespace) -> Any:
    if args.model is None:
        return None
    from lightly_graft.errors import GraftError

    text = args.model.strip()
    if not text.startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise GraftError(f"--model is not valid JSON ({error}): {text}") from None


def _evaluate(args: argparse.Namespace, vit: Any, output: Path) -> dict[str, Any]:
    from lightly_graft import eval as protocols
    from lightly_graft.training.devices import resolve_device

    device = resolve_device(args.device)
    if args.protocol in ("finetune", "partial"):
        return _finetune(args, vit, device, output)
    train_set, test_set, num_classes = _datasets(args, vit, augment=False)
    vit.to(device)
    train_x, train_y = protocols.extract_features(vit, _loader(args, train_set))
    test_x, test_y = protocols.extract_features(vit, _loader(args, test_set))
    data = (train_x, train_y, test_x, test_y, num_classes)
    if args.protocol == "knn":
        k = min(args.k, train_x.shape[0])
        return protocols.knn_eval(
            *data, k=k, temperature=args.temperature, backend=args.knn_backend
        )
    if args.protocol == "linear":
        lrs = args.lrs or protocols.linear.DEFAULT_LRS
        return protocols.linear_eval(
            train_x.to(device),
            train_y.to(device),
            test_x.to(device),
            test_y.to(device),
            num_classes,
            lrs=lrs,
            epochs=args.epochs or 90,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            weight_decay=0.0,
            seed=args.seed,
        ).as_dict()
    return protocols.fewshot_eval(
        *data,
        fractions=args.fractions,
        seed=args.seed,
        subsets_path=args.subsets or output / "fewshot_subsets.json",
        cs=args.cs,
    )


def _finetune(
    args: argparse.Namespace, vit: Any, device: Any, output: Path
) -> dict[str, Any]:
    from lightly_graft.eval.finetune import FinetuneSettings, finetune

    train_set, test_set, num_classes = _datasets(args, vit, augment=True)
    labelled: dict[str, Any] = {}
    if args.label_fraction is not None:
        train_set, labelled = _labelled(args, train_set, output)
    settings = FinetuneSettings(
        epochs=args.epochs or 100,
        base_lr=args.base_lr,
        layer_decay=args.layer_decay,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        frozen_blocks=args.freeze_blocks or 0,
        label_smoothing=args.label_smoothing,
    )
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    devices = [device.index or 0] if device.type == "cuda" else 1
    metrics = finetune(
        vit,
        _loader(args, train_set, shuffle=True),
        _loader(args, test_set),
        num_classes,
        settings,
        accelerator=accelerator,
        devices=devices,
        output=output,
        seed=args.seed,
    )
    return {**metrics, **labelled}


def _labelled(
    args: argparse.Namespace, train_set: Any, output: Path
) -> tuple[Any, dict[str, Any]]:
    """The class-balanced labelled subset of ``--label-fraction`` (semi-supervised
    fine-tuning), the same draw and file format as the fewshot protocol's."""
    import numpy as np
    from torch.utils.data import Subset

    from lightly_graft.eval.fewshot import labelled_subsets

    fraction = args.label_fraction
    path = args.subsets or output / "fewshot_subsets.json"
    labels = np.asarray(_targets(train_set))
    indices = labelled_subsets(labels, [fraction], args.seed, path)
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


def _datasets(args: argparse.Namespace, vit: Any, *, augment: bool) -> tuple:
    """Train and held-out splits (seeded subsets if limited) and the class count."""
    from torchvision import transforms as T

    from lightly_graft.data import (
        default_normalize,
        eval_transform,
        open_dataset,
        seeded_subset,
    )

    size = vit.patch_embed.img_size[0]
    normalize = default_normalize(args.data)
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
        args.data, train=True, transform=train_transform, seed=args.seed
    )
    test = open_dataset(
        args.data, train=False, transform=test_transform, seed=args.seed
    )
    num_classes = len(train.classes)  # type: ignore[attr-defined]
    return (
        seeded_subset(train, args.limit_train, args.seed),
        seeded_subset(test, args.limit_test, args.seed),
        num_classes,
    )


def _loader(args: argparse.Namespace, dataset: Any, shuffle: bool = False) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=shuffle,
        num_workers=args.num_workers,
        drop_last=False,
    )


def _markdown(record: dict[str, Any]) -> str:
    """A table of the protocol's accuracies (percent)."""
    metrics = record["metrics"]
    lines = [
        f"# {record['protocol']} evaluation of `{record['checkpoint']}`",
        "",
        f"Data `{record['data']}`, backbone `{record['backbone']['name']}` "
        f"{record['backbone'].get('kwargs', {})}, {record['seconds']} s.",
        "",
        "| protocol | setting | top-1 % | top-5 % |",
        "|---|---|---:|---:|",
    ]
    rows = _rows(record["protocol"], metrics)
    lines += [
        f"| {p} | {s} | {100 * t1:.2f} | {100 * t5:.2f} |" for p, s, t1, t5 in rows
    ]
    return "\n".join(lines)


def _rows(
    protocol: str, metrics: dict[str, Any]
) -> list[tuple[str, str, float, float]]:
    if protocol == "knn":
        setting = f"k={metrics['k']}, T={metrics['temperature']}"
        return [("knn", setting, metrics["top1"], metrics["top5"])]
    if protocol == "linear":
        rows = [
            (
                "linear",
                f"best lr={metrics['best_lr']}",
                metrics["top1"],
                metrics["top5"],
            )
        ]
        rows += [
            ("linear", f"lr={lr}", acc["top1"], acc["top5"])
            for lr, acc in metrics["per_lr"].items()
        ]
        return rows
    if protocol == "fewshot":
        return [
            (
                f"fewshot {name}",
                f"{m['num_labelled']} labels, C={m['best_c']}",
                m["top1"],
                m["top5"],
            )
            for name, m in metrics.items()
        ]
    setting = (
        f"{metrics['epochs']} epochs, layer decay {metrics['layer_decay']}, "
        f"{metrics['frozen_blocks']} frozen blocks"
    )
    if "label_fraction" in metrics:
        setting += (
            f", {metrics['label_fraction'] * 100:g}% of the labels "
            f"({metrics['num_labelled']})"
        )
    return [(protocol, setting, metrics["top1"], metrics["top5"])]
