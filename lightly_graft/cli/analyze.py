"""``lightly-graft analyze``: gradient conflict, VIC, attention distance, t-SNE plots."""

from __future__ import annotations

import argparse
from typing import Any

from lightly_graft.analysis.run import KINDS
from lightly_graft.functional.vic import VIC_DEFINITIONS
from lightly_graft.training.checkpoints import FORMATS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "analyze",
        help="plot gradient conflict, VIC, attention distance or t-SNE of checkpoints",
        description=(
            "Measure checkpoints as in the Layer Grafted Pre-training paper and "
            "write PNG figures and CSV numbers: gradient-conflict (Fig. 1, MIM/CL "
            "gradient cosine per block, via the 'mtl' method), vic (Fig. 6), "
            "attention-distance (Fig. 7), tsne (Fig. 3). Several --checkpoint "
            "flags put several models on one figure."
        ),
    )
    parser.add_argument("--kind", required=True, choices=KINDS, help="what to measure")
    parser.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        metavar="CKPT",
        help="checkpoint file (repeat for several models), e.g. runs/NAME/backbone.pt",
    )
    parser.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        metavar="FMT",
        help=(
            "checkpoint format, once for all or once per --checkpoint: "
            f"{', '.join(FORMATS)} (default: timm, a run's backbone.pt with "
            "backbone.json beside it)"
        ),
    )
    parser.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="legend name, once per --checkpoint (default: file or run name)",
    )
    parser.add_argument(
        "--data",
        default="default",
        help="'default' (embedded Fashion-MNIST) or an ImageFolder directory",
    )
    parser.add_argument(
        "--output", required=True, help="directory for PNG and CSV files"
    )
    parser.add_argument(
        "--num-batches",
        type=int,
        default=8,
        metavar="N",
        help="batches per checkpoint; t-SNE embeds N x B images (default: 8)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="B", help="default: 64"
    )
    parser.add_argument(
        "--method",
        default="mtl",
        help="zoo method with loss_terms for gradient-conflict (default: mtl)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 ... (default: cuda if available)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader workers (default: 0)"
    )
    parser.add_argument(
        "--vic-definition",
        default="paper",
        choices=VIC_DEFINITIONS,
        help=(
            "vic: 'paper' (the official evaluate_VIC: centred and re-normalised, "
            "sqrt(var + 1e-4), summed squared covariances; default) or "
            "'per_entry' (uncentred, mean std and mean squared covariance)"
        ),
    )
    parser.add_argument(
        "--renormalize-attention",
        action="store_true",
        help=(
            "attention-distance: rescale each query's attention over the patches "
            "to sum to 1 after dropping CLS (default: as the paper's code, no)"
        ),
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the image subset, augmentations and t-SNE (default: 0)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from lightly_graft.analysis.run import run_analysis
    from lightly_graft.run.lock import check_directory

    check_directory(args.output, "analyze output directory")
    paths = run_analysis(
        args.kind,
        args.checkpoint,
        args.data,
        args.output,
        formats=args.format or "timm",
        labels=args.label,
        num_batches=args.num_batches,
        batch_size=args.batch_size,
        method=args.method,
        device=args.device,
        num_workers=args.num_workers,
        seed=args.seed,
        vic_definition=args.vic_definition,
        renormalize_attention=args.renormalize_attention,
    )
    for path in paths:
        print(path)
    return 0
