"""Training FLOPs of a stage, counted, and the steps that match a FLOP budget.

A stage's training FLOPs are its FLOPs per step times its steps. The FLOPs of a
step are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode``
around one real training step (Lightning's whole ``training_step``: both
encoders, heads, decoder, backward; from ``on_train_batch_start`` to
``on_train_batch_end``) of the stage's own method, batch and views, with frozen
stages frozen as in training. The counter has formulas for matrix products and
convolutions (nearly all of a ViT's work) but none for the CPU fused attention
kernel, so timm's unfused attention (the same math) is switched on while
counting. The optimizer's elementwise update is not counted.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightly_graft.recipes.loader import recipe_from_tree
from lightly_graft.recipes.resolve import resolve_recipe
from lightly_graft.run.build import build_datamodule, build_method


@dataclass(frozen=True)
class StageCost:
    """What a stage costs: FLOPs per step and the batches of a full epoch."""

    flops_per_step: int
    full_epoch_batches: int

    def steps(self, epochs: int, limit_train_batches: int | float | None) -> int:
        """Training steps of ``epochs`` epochs under ``limit_train_batches``."""
        return epochs * batches_per_epoch(self.full_epoch_batches, limit_train_batches)


def batches_per_epoch(full: int, limit: int | float | None) -> int:
    """Lightning's batches per epoch for a ``limit_train_batches`` value."""
    if limit is None:
        return full
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(full * limit))
    return min(full, int(limit))


@contextmanager
def unfused_attention(model: torch.nn.Module) -> Iterator[None]:
    """timm's unfused attention (explicit matmuls, which FlopCounterMode counts)."""
    attns: list[Any] = [m for m in model.modules() if hasattr(m, "fused_attn")]
    saved = [m.fused_attn for m in attns]
    for m in attns:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, value in zip(attns, saved, strict=True):
            m.fused_attn = value


class _CountOneStep(pl.Callback):
    """Counts the FLOPs of the first training step (forward + backward)."""

    def __init__(self) -> None:
        self.counter = FlopCounterMode(display=False)
        self.flops: int | None = None
        self._attention: Any = None

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, idx: int
    ) -> None:
        self._attention = unfused_attention(pl_module)
        self._attention.__enter__()
        self.counter.__enter__()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.counter.__exit__(None, None, None)
        self._attention.__exit__(None, None, None)
        self.flops = int(self.counter.get_total_flops())


def count_stage(tree: dict[str, Any], index: int, *, source: str) -> StageCost:
    """Counts one training step of stage ``index`` of a recipe tree.

    The stage's ``graft`` and ``anchor`` are dropped (they load weights and add
    an elementwise penalty; neither changes the counted work) so that the count
    needs no checkpoint; frozen stages stay frozen.
    """
    tree = copy.deepcopy(tree)
    for stage in tree["stages"]:
        stage.pop("graft", None)
        stage.pop("anchor", None)
    recipe = resolve_recipe(recipe_from_tree(tree, source=source))
    stage = recipe.stages[index]
    pl.seed_everything(0, workers=True, verbose=False)
    method = build_method(recipe, stage)
    datamodule = build_datamodule(recipe, stage)
    datamodule.setup()
    full = len(datamodule.train_dataloader())
    counter = _CountOneStep()
    trainer = pl.Trainer(
        max_steps=1,
        accelerator=recipe.accelerator,
        devices=1,
        precision=stage.precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[counter],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(method, datamodule=datamodule)
    assert counter.flops is not None, "the counting step did not run"
    return StageCost(flops_per_step=counter.flops, full_epoch_batches=full)


def match_steps(
    stages: list[dict[str, Any]],
    costs: list[StageCost],
    target: float,
) -> list[dict[str, Any]]:
    """Rescales every stage's steps by one factor so that their FLOPs sum to
    ``target``; returns the stages with new ``epochs`` and ``limit_train_batches``.

    Each stage keeps its batch size and its share of the arm's steps; the epochs
    scale by the factor (at least 1) and ``limit_train_batches`` makes up the
    rest, so the total is within half a step per epoch of the target.
    """
    if target <= 0:
        raise ValueError(f"a FLOP budget must be positive, got {target}")
    own = sum(
        c.flops_per_step * c.steps(int(s["epochs"]), s.get("limit_train_batches"))
        for s, c in zip(stages, costs, strict=True)
    )
    factor = target / own
    out = []
    for stage, cost in zip(stages, costs, strict=True):
        steps = cost.steps(int(stage["epochs"]), stage.get("limit_train_batches"))
        wanted = max(1, round(steps * factor))
        epochs = max(1, round(int(stage["epochs"]) * factor))
        epochs = max(epochs, math.ceil(wanted / cost.full_epoch_batches))
        out.append(
            {
                **stage,
                "epochs": epochs,
                "limit_train_batches": max(1, round(wanted / epochs)),
            }
        )
    return out


def total_flops(stages: list[dict[str, Any]], costs: list[StageCost]) -> list[int]:
    """FLOPs of each stage: per step times its steps."""
    return [
        c.flops_per_step * c.steps(int(s["epochs"]), s.get("limit_train_batches"))
        for s, c in zip(stages, costs, strict=True)
    ]
