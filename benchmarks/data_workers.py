"""Which ``data.num_workers`` is fastest for 28 px Fashion-MNIST training?

Trains the quickstart's stages (MAE, then grafted MoCo v3 with two BYOL views)
for a fixed number of steps with 0, 1 and 2 DataLoader workers and reports the
training images per second (wall clock, first batches excluded). On a 2-core
CPU the workers compete with torch's compute threads, so the answer is not
obvious: the two-view transform costs about 2.3 ms per image in PIL.

    python benchmarks/data_workers.py [--steps 20] [--recipe recipes/quickstart.yaml]

Writes ``benchmarks/results/data_workers.md``. The machine load (1-minute load
average) is printed beside each row: numbers taken on a busy machine are not
comparable with numbers taken on an idle one.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from lightly_graft.recipes import load_recipe
from lightly_graft.recipes.resolve import resolve_recipe
from lightly_graft.run.build import build_datamodule, build_method

RESULTS = Path(__file__).parent / "results" / "data_workers.md"


def images_per_second(
    method: Any, datamodule: Any, steps: int, warmup: int = 2
) -> float:
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad])
    loader = iter(datamodule.train_dataloader())
    batched = datamodule.batch_transform is not None
    # batched views (the default): made from the decoded batch, as in a fit
    iterator = (datamodule.training_views(b) if batched else b for b in loader)
    for _ in range(warmup):
        views, _ = next(iterator)
        method.training_loss(views).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    start = time.perf_counter()
    images = 0
    for _ in range(steps):
        views, _ = next(iterator)
        method.training_loss(views).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        images += len(views[0])
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rows = [
        "| stage | method | batch | num_workers | images/s | load avg |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for workers in (0, 1, 2):
        recipe = resolve_recipe(
            load_recipe(args.recipe, [f"data.num_workers={workers}"])
        )
        for stage in recipe.stages:
            torch.manual_seed(0)
            method = build_method(recipe, stage)
            datamodule = build_datamodule(recipe, stage)
            rate = images_per_second(method, datamodule, args.steps)
            load = os.getloadavg()[0]
            row = f"| {stage.name} | {stage.method} | {stage.batch_size} | {workers} | {rate:.0f} | {load:.1f} |"
            print(row, flush=True)
            rows.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# DataLoader workers, `{args.recipe}`, {args.steps} steps per row, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}\n\n"
    )
    RESULTS.write_text(header + "\n".join(rows) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
