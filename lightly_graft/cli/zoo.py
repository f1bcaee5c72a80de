"""``lightly-graft zoo``: list the registered methods."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        "zoo",
        help="list every registered method with a one-line description and its default recipe",
        description="List every method of the zoo: its name (the `method:` of a recipe "
        "stage), a one-line description and its default recipe.",
    )


def run(args: argparse.Namespace) -> int:
    from lightly_graft import zoo

    entries = zoo.entries()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        recipe = entry.recipe or "-"
        print(f"{entry.name:<{width}}  {entry.description}  [recipe: {recipe}]")
    return 0
