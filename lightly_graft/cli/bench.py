"""``lightly-graft bench SUITE.yaml``: arms x seeds, evaluated, tabulated."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark suite: every arm x seed, evaluated and tabulated",
        description=(
            "Trains every (arm, seed) of a suite file (recipes/suites/), evaluates "
            "each final backbone (kNN, linear, 1%%/10%% few-shot; LR and C chosen on "
            "a held-out validation split), counts training FLOPs, and writes "
            "table.md, table.csv, results.json and figures/ into the bench "
            "directory. Resumable: finished (arm, seed) are never rerun."
        ),
    )
    parser.add_argument("suite", help="suite YAML file")
    parser.add_argument(
        "--output", help="bench directory (default: runs/bench/<suite name>)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an existing bench directory"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="ARM",
        help="run only these arms (and what they need)",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, metavar="N", help="run only these seeds"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the suite and its arms; train nothing",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the tables and figures from the finished results; train nothing",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from lightly_graft.bench.runner import report_only, run_suite

    if args.report_only:
        path = report_only(args.suite, output=args.output)
        print(f"table: {path}")
        return 0
    root = run_suite(
        args.suite,
        output=args.output,
        resume=args.resume,
        only=args.only,
        seeds=args.seeds,
        check_only=args.check,
    )
    if args.check:
        print(f"suite OK; the bench would write to {root}")
    else:
        print(f"table: {root / 'table.md'}")
    return 0
