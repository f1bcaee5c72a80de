"""Paired whole-step timing shared by overhead_bench.py and precision_bench.py.

A *side* is a callable ``run(steps, precision) -> list[float]`` that builds a fresh
seeded model, trains ``steps`` steps on fixed random data and returns the
wall-clock time of each step, measured from one step's start to the next one's
(so data loading, hooks, logging, the optimizer and the scheduler are all in).
``paired`` runs two sides round by round, alternating which goes first, drops
each round's warm-up steps and reports the median step time per round and the
per-round ratio.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

Side = Callable[[int, str], list[float]]
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Model sizes: the quickstart's (recipes/quickstart.yaml), the shipped 192-wide
# recipes' (recipes/*.yaml except quickstart), and ViT-B/16 (recipes/paper/).
PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": dict(
        backbone=dict(
            name="vit_tiny_patch16_224",
            img_size=28,
            patch_size=7,
            embed_dim=64,
            depth=6,
            num_heads=4,
        ),
        heads=dict(projection_hidden_dim=512, projection_dim=128),
        decoder=dict(decoder_dim=64, decoder_depth=2, decoder_num_heads=4),
        moco_batch=128,
        mae_batch=256,
    ),
    "recipes192": dict(
        backbone=dict(
            name="vit_tiny_patch16_224",
            img_size=32,
            patch_size=4,
            embed_dim=192,
            depth=6,
            num_heads=3,
        ),
        heads=dict(projection_hidden_dim=1024, projection_dim=256),
        decoder=dict(decoder_dim=128, decoder_depth=2, decoder_num_heads=4),
        moco_batch=128,
        mae_batch=128,
    ),
    "vitb16": dict(
        backbone=dict(name="vit_base_patch16_224"),
        heads=dict(projection_hidden_dim=4096, projection_dim=256),
        decoder=dict(decoder_dim=512, decoder_depth=8, decoder_num_heads=16),
        moco_batch=4,
        mae_batch=4,
    ),
}


class RandomImages(Dataset):
    """``(views, label)`` items of fixed seeded random images (no decoding cost)."""

    def __init__(self, size: int, img_size: int, num_views: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, num_views, 3, img_size, img_size, generator=generator)  # fmt: skip
        self.labels = torch.randint(0, 10, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        return list(self.images[index].unbind(0)), self.labels[index]


def loader(batch: int, steps: int, img_size: int, num_views: int) -> DataLoader:
    data = RandomImages(batch * min(steps, 8), img_size, num_views)
    # Cycles over at most 8 distinct batches: enough for timing, little memory.
    sampler = torch.utils.data.RandomSampler(
        data, replacement=True, num_samples=batch * steps
    )
    return DataLoader(data, batch_size=batch, sampler=sampler, drop_last=True)


class StepClock(pl.Callback):
    """Times each Lightning step from its batch start to the next batch start."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        self.starts.append(time.perf_counter())

    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def fit_timed(
    module: pl.LightningModule,
    data: DataLoader,
    steps: int,
    precision: str,
    root: Path,
    callbacks: list[pl.Callback] | None = None,
    accelerator: str = "cpu",
) -> list[float]:
    """``Trainer.fit`` as a recipe stage builds it (CSV logging on, no progress
    bar, no checkpoints); returns the per-step times."""
    clock = StepClock()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        accelerator=accelerator,
        devices=1,
        precision=precision,  # type: ignore[arg-type]
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps // 2)),
        logger=pl.loggers.CSVLogger(root),
        callbacks=[*(callbacks or []), clock],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    trainer.fit(module, data)
    return clock.times()


@dataclass
class Pair:
    name: str
    a_name: str
    b_name: str
    a: list[float]  # median step seconds per round
    b: list[float]

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b, strict=True)]

    def median_interval(self, draws: int = 5000, seed: int = 0) -> tuple[float, float]:
        """90% bootstrap interval of the median per-round ratio (rounds resampled
        with replacement, seeded)."""
        rng = random.Random(seed)
        ratios = self.ratios
        medians = sorted(
            statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws)
        )
        return medians[int(0.05 * draws)], medians[int(0.95 * draws) - 1]

    def row(self) -> str:
        def spread(values: list[float], fmt: str) -> str:
            return (
                f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))}"
                f" / {fmt.format(max(values))}"
            )

        return (
            f"| {self.name} | {self.a_name} | {spread(self.a, '{:.4f}')} | "
            f"{self.b_name} | {spread(self.b, '{:.4f}')} | "
            f"{spread(self.ratios, '{:.3f}')} | "
            "{:.3f} - {:.3f} |".format(*self.median_interval())
        )


TABLE_HEAD = (
    "| case | A | A s/step (min / median / max) | B | B s/step | "
    "A / B per round (min / median / max) | median A / B, 90% bootstrap "
    "interval |\n|---|---|---:|---|---:|---:|---:|"
)


def paired(
    name: str,
    a: tuple[str, Side, str],
    b: tuple[str, Side, str],
    rounds: int,
    steps: int,
    warmup: int,
) -> Pair:
    """Runs ``a`` and ``b`` (name, side, precision) for ``rounds`` rounds."""
    medians: dict[str, list[float]] = {a[0]: [], b[0]: []}
    for round_ in range(rounds):
        order = (a, b) if round_ % 2 == 0 else (b, a)
        for side_name, side, precision in order:
            times = side(warmup + steps, precision)[warmup:]
            medians[side_name].append(statistics.median(times))
            print(
                f"{name} round {round_} {side_name}: {medians[side_name][-1]:.4f} s/step",
                flush=True,
            )
    return Pair(name, a[0], b[0], medians[a[0]], medians[b[0]])


def environment() -> str:
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"pytorch-lightning {pl.__version__}"
    )
