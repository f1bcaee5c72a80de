"""``lightly-graft train RECIPE``: run a recipe's stages (MIM -> CL) end to end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Run the stages of a YAML recipe in order, each with a Lightning Trainer: e.g.
step i (MAE) then step ii (layer-grafted MoCo v3, its lower blocks grafted from
step i's final weights). kNN accuracy on a held-out split is measured at random
initialisation (the floor) and during training. Writes, under the run directory
(<output_dir>/<name>/ of the recipe, or --output):

  <stage>/           checkpoints (last + best kNN), metrics.csv, recipe.yaml
  backbone.pt/.json  the final online encoder as a plain timm state dict
  report.md, knn.png kNN table (with the random-init floor) and plot
  analysis/          the recipe's analyses of every stage (PNG + CSV), in the report

The whole recipe, its data path and graft checkpoints are checked before any
training starts. An existing run directory is never overwritten: pass --resume
to skip its finished stages and continue an interrupted one (Ctrl-C leaves a
checkpoint), or choose a new --output. Recipe format: docs/recipes.md.
"""

EPILOG = """\
examples:
  lightly-graft train recipes/quickstart.yaml
  lightly-graft train recipes/quickstart.yaml --set stages.1.epochs=5 --output runs/longer
  lightly-graft train recipes/paper/vit_b16_imagenet_mae_moco.yaml \\
      --set data.path=/data/imagenet --accelerator gpu --devices 8
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="run a recipe: MIM then grafted CL, with kNN monitoring and a report",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", metavar="RECIPE", help="the recipe YAML file")
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help="run directory (default: <output_dir>/<name> from the recipe)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a recipe value, validated like the file; KEY is a dotted "
        "path with list indices or stage names (stages.1.epochs=5, "
        "stages.moco.optimizer.stage_lrs=[1e-5,1e-5,1e-4], data.path=DIR); "
        "VALUE is YAML; repeatable, later ones win",
    )
    parser.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "gpu", "cuda", "mps"),
        help="Lightning accelerator (same as --set accelerator=...; default: the "
        "recipe's, normally auto)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="devices per node (same as --set devices=N); the effective LR scales "
        "with the global batch size",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing run directory made with the same recipe: "
        "finished stages are skipped, an interrupted stage continues from its "
        "last checkpoint",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the recipe, data and checkpoints, print the resolved "
        "recipe with its derived values (effective LRs), and exit without training",
    )
    return parser


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """``--set`` values plus the ones that ``--accelerator``/``--devices`` imply."""
    overrides = list(args.overrides)
    if args.accelerator is not None:
        overrides.append(f"accelerator={args.accelerator}")
    if args.devices is not None:
        overrides.append(f"devices={args.devices}")
    return overrides


def run(args: argparse.Namespace) -> int:
    from lightly_graft.run.pipeline import prepare_run, run_pipeline
    from lightly_graft.run.stage import is_global_zero

    plan = prepare_run(
        args.recipe,
        overrides=overrides_from_args(args),
        output=args.output,
        resume=args.resume,
        check_only=args.check,
    )
    if args.check:
        sys.stdout.write(plan.resolved_yaml)
        print(
            f"# recipe OK; the run would write to {plan.run_dir.root}", file=sys.stderr
        )
        return 0
    summary = run_pipeline(plan)
    if is_global_zero():
        print(f"report: {summary.report}")
        print(f"backbone: {summary.backbone}")
    return 0
