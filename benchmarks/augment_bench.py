"""Per-image vs batched views: the data path per batch and its share of a step.

Issue 13, item 1: at the quickstart's size (ViT 28 px, patch 7, width 64, depth
6; MoCo batch 128, MAE batch 256) the DataLoader's per-image PIL views took as
long as the model step. This measures, per stage of ``--recipe``:

- ``data``: one training batch ready for ``training_loss``. Per-image
  (``data.augment.batched: false``): ``next()`` on the training loader, which
  runs lightly's transforms image by image. Batched (the default): ``next()`` on
  the loader, which only decodes, plus the kornia views made from the batch on
  ``--device`` (what ``SSLDataModule.on_after_batch_transfer`` does in a fit).
- ``step``: ``training_loss`` + ``backward`` + AdamW ``step`` on those views
  (the momentum update included for the MoCo stage), on ``--device``.
- ``share``: data / (data + step), the fraction of a training step spent making
  its views (target: <= 20% batched), and ``speed-up``: per-image data time /
  batched data time (target: >= 5x).

Medians of ``--batches`` batches after ``--warmup``; ``num_workers`` is the
recipe's (0 in the quickstart: benchmarks/results/data_workers.md). With
``--quickstart`` it also runs ``lightly-graft train RECIPE`` end to end twice
(``--set data.augment.batched=false`` / ``true``, into a temporary directory) and
reports both wall times.

    python benchmarks/augment_bench.py [--batches 20] [--device cpu] [--quickstart]

Writes ``benchmarks/results/augment.md``. Time it on a quiet machine: the
1-minute load average is printed in the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightly_graft.methods.base import SSLMethod, unpack_batch  # noqa: E402
from lightly_graft.methods.grafted_moco import GraftedMoCo  # noqa: E402
from lightly_graft.recipes import load_recipe  # noqa: E402
from lightly_graft.recipes.resolve import resolve_recipe  # noqa: E402
from lightly_graft.run.build import build_datamodule, build_method  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "augment.md"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(
    run: Callable[[], Any], batches: int, warmup: int, device: torch.device
) -> float:
    times = []
    for i in range(warmup + batches):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def data_path(datamodule: Any, device: torch.device) -> Callable[[], list[Any]]:
    """One call = one batch of views on ``device``, as a fit would get it."""
    state = {"iterator": iter(datamodule.train_dataloader())}

    def next_batch() -> list[Any]:
        try:
            batch = next(state["iterator"])
        except StopIteration:
            state["iterator"] = iter(datamodule.train_dataloader())
            batch = next(state["iterator"])
        images, labels = batch[0], batch[1]
        if isinstance(images, list):
            batch = [[v.to(device) for v in images], labels.to(device)]
        else:
            batch = [images.to(device), labels.to(device)]
        if datamodule.batch_transform is not None:
            batch = datamodule.training_views(batch)
        return batch

    return next_batch


def step(method: SSLMethod, views: list[torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad])

    def run() -> None:
        if isinstance(method, GraftedMoCo):
            with torch.no_grad():
                from lightly.models.utils import update_momentum

                for online, ema in method.momentum_pairs():
                    update_momentum(online, ema, 0.99)
        method.training_loss(views).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def measure(args: argparse.Namespace, device: torch.device) -> list[str]:
    rows = []
    for stage_index in range(len(resolve_recipe(load_recipe(args.recipe)).stages)):
        times: dict[bool, tuple[float, float]] = {}
        for batched in (False, True):
            recipe = resolve_recipe(
                load_recipe(
                    args.recipe, [f"data.augment.batched={str(batched).lower()}"]
                )
            )
            stage = recipe.stages[stage_index]
            torch.manual_seed(0)
            datamodule = build_datamodule(recipe, stage)
            datamodule.setup()
            next_batch = data_path(datamodule, device)
            data = _median_seconds(next_batch, args.batches, args.warmup, device)
            method = build_method(recipe, stage).to(device).train()
            views, _ = unpack_batch(next_batch())
            model = _median_seconds(
                step(method, views), args.batches, args.warmup, device
            )
            times[batched] = (data, model)
            share = data / (data + model)
            rows.append(
                f"| {stage.name} ({stage.method}) | {stage.batch_size} | "
                f"{'batched' if batched else 'per-image'} | {data * 1e3:.1f} | "
                f"{model * 1e3:.1f} | {share:.0%} | "
                f"{times[False][0] / data:.1f}x | {os.getloadavg()[0]:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def quickstart_wall_times(recipe: str) -> list[str]:
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for batched in ("false", "true"):
        with tempfile.TemporaryDirectory() as output:
            command = [
                sys.executable,
                "-m",
                "lightly_graft",
                "train",
                recipe,
                "--output",
                output,
                "--set",
                f"data.augment.batched={batched}",
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, cwd=ROOT)
            seconds = time.perf_counter() - start
        rows.append(f"| `data.augment.batched: {batched}` | {seconds / 60:.1f} min |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--quickstart",
        action="store_true",
        help="also time `lightly-graft train RECIPE` end to end, per-image then batched",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lines = [
        f"# Per-image vs batched views, `{args.recipe}`",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
        f"`{device}`; medians of {args.batches} batches after {args.warmup}. "
        "data: one batch of views ready on the device (per-image: the loader's "
        "lightly transforms; batched: the loader's decode + kornia views on the "
        "device); step: training_loss + backward + AdamW; share: data / (data + "
        "step); speed-up: per-image data / this row's data.",
        "",
        "| stage | batch | views | data ms | step ms | data share | speed-up | load avg |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
        *measure(args, device),
    ]
    if args.quickstart:
        lines += [
            "",
            f"`lightly-graft train {args.recipe}` end to end (wall clock):",
            "",
            "| views | wall time |",
            "|---|---:|",
            *quickstart_wall_times(args.recipe),
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
