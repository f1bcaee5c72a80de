"""The ``lightly-graft`` command line.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``.
User errors (:class:`lightly_graft.errors.GraftError`) are printed as one line on
stderr and give exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lightly_graft.errors import GraftError

# Subcommand modules of lightly_graft.cli, in the order `--help` lists them.
COMMANDS: tuple[str, ...] = ("train", "eval", "analyze", "bench", "zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightly-graft",
        description=(
            "Layer Grafted Pre-training for lightly: MIM (MAE, ccMIM) for the lower "
            "ViT blocks, then contrastive learning (MoCo v3, VICReg, Masked MoCo) "
            "on top, run from YAML recipes."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"lightly_graft.cli.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except GraftError as error:
        print(f"lightly-graft {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightly-graft {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
