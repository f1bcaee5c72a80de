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
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from lightly_graft.eval.protocols import PROTOCOLS, EvalSettings
from lightly_graft.files import write_atomic
from lightly_graft.training.checkpoints import FORMATS

DEFAULTS = EvalSettings()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a backbone checkpoint: knn, linear, fewshot, finetune, partial",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="backbone checkpoint file")
    parser.add_argument(
        "--data", default=DEFAULTS.data, help="'default' or a directory"
    )
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--format", default="timm", choices=FORMATS)
    parser.add_argument(
        "--model",
        default=None,
        help="architecture when the file does not store it and has no backbone.json: "
        'a timm name or JSON, e.g. \'{"name": "vit_tiny_patch16_224", "img_size": 32}\'',
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="output directory (default: eval-<protocol> beside the checkpoint); "
        "an earlier result in it is kept unless --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier result (metrics.json) in --output",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--limit-train", type=int, default=None, help="subset size")
    parser.add_argument("--limit-test", type=int, default=None, help="subset size")
    group = parser.add_argument_group("knn")
    group.add_argument("--k", type=int, default=DEFAULTS.k)
    group.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    group.add_argument(
        "--knn-backend",
        default=DEFAULTS.knn_backend,
        choices=("auto", "faiss", "torch"),
    )
    group = parser.add_argument_group("linear / finetune / partial")
    group.add_argument(
        "--epochs", type=int, default=None, help="linear 90, finetune 100"
    )
    group.add_argument(
        "--lrs", type=float, nargs="+", default=None, help="linear LR grid"
    )
    group.add_argument(
        "--optimizer", default=DEFAULTS.optimizer, choices=("sgd", "lars")
    )
    group.add_argument("--base-lr", type=float, default=DEFAULTS.base_lr)
    group.add_argument("--layer-decay", type=float, default=DEFAULTS.layer_decay)
    group.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    group.add_argument("--warmup-epochs", type=float, default=DEFAULTS.warmup_epochs)
    group.add_argument(
        "--label-smoothing", type=float, default=DEFAULTS.label_smoothing
    )
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
    group.add_argument(
        "--fractions", type=float, nargs="+", default=list(DEFAULTS.fractions)
    )
    group.add_argument("--cs", type=float, nargs="+", default=list(DEFAULTS.cs))
    group.add_argument(
        "--subsets", type=Path, default=None, help="subsets JSON (read or written)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from lightly_graft.eval.protocols import evaluate
    from lightly_graft.training.checkpoints import load_backbone
    from lightly_graft.training.devices import resolve_device

    _check_args(args)
    output = args.output or args.checkpoint.parent / f"eval-{args.protocol}"
    _check_output(output, overwrite=args.overwrite)
    vit, spec = load_backbone(args.checkpoint, args.format, spec=_model_spec(args))
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    names = [f.name for f in dataclasses.fields(EvalSettings)]
    settings = EvalSettings(**{name: getattr(args, name) for name in names})
    device = resolve_device(args.device)
    metrics = evaluate(args.protocol, vit, settings, device=device, output=output)
    record = {
        "checkpoint": str(args.checkpoint),
        "format": args.format,
        "backbone": spec.to_dict(),
        "data": str(args.data),
        "protocol": args.protocol,
        "seconds": round(time.perf_counter() - start, 2),
        "metrics": metrics,
    }
    write_atomic(output / "metrics.json", json.dumps(record, indent=2) + "\n")
    table = _markdown(record)
    write_atomic(output / "metrics.md", table + "\n")
    print(table)
    print(f"\nwrote {output / 'metrics.json'} and {output / 'metrics.md'}")
    return 0


def _check_output(output: Path, *, overwrite: bool) -> None:
    """Refuses an unusable --output, or one holding an earlier result."""
    from lightly_graft.errors import GraftError
    from lightly_graft.run.lock import check_directory

    check_directory(output, "eval output directory")
    if (output / "metrics.json").exists() and not overwrite:
        raise GraftError(
            f"'{output / 'metrics.json'}' exists (an earlier eval); nothing was "
            "overwritten: give another --output, or add --overwrite to replace it"
        )


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
