"""Stop a diverged training run instead of saving NaN weights.

``FiniteGuard`` (a Lightning callback) checks the loss of every step before its
backward pass: a non-finite loss raises :class:`DivergenceError`, so the
optimizer never applies its gradients and the weights (and the checkpoint
Lightning's ``OnExceptionCheckpoint`` writes on the way out) are still the last
finite ones. :func:`check_finite` checks a module's weights, e.g. at the end of
a stage before its encoder is saved.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from lightly_graft.errors import GraftError

FIXES = (
    "lower the learning rate (optimizer.base_lr or stage_lrs), use precision 32 "
    "or bf16-mixed instead of 16-mixed, or set gradient_clip_val (e.g. 1.0)"
)


class DivergenceError(GraftError):
    """Training produced a non-finite loss or non-finite weights."""


def non_finite_count(tensors: list[torch.Tensor]) -> tuple[int, int]:
    """(non-finite values, all values) over the floating-point tensors."""
    bad = total = 0
    for tensor in tensors:
        if tensor.is_floating_point():
            bad += int((~torch.isfinite(tensor)).sum())
            total += tensor.numel()
    return bad, total


def check_finite(module: torch.nn.Module, *, stage: str, step: int, kept: str) -> None:
    """Raises :class:`DivergenceError` if any parameter or buffer is non-finite.

    Args:
        stage: The stage name, for the message.
        step: The global step, for the message.
        kept: Says where the last finite checkpoint is.
    """
    bad, total = non_finite_count([*module.parameters(), *module.buffers()])
    if bad:
        raise DivergenceError(
            f"stage '{stage}' diverged: {bad} of {total} weights are NaN/inf at the "
            f"end (step {step}); nothing was saved as the stage's result ({kept}). "
            f"To fix: {FIXES}"
        )


class FiniteGuard(pl.Callback):
    """Raises :class:`DivergenceError` at the first non-finite training loss.

    Args:
        stage: The stage name, for the message.
        checkpoint_dir: Where the stage's checkpoints are, for the message.
    """

    def __init__(self, stage: str, checkpoint_dir: str | Path) -> None:
        self.stage = stage
        self.checkpoint_dir = Path(checkpoint_dir)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        value = loss.detach().float().flatten()[0].item()
        raise DivergenceError(
            f"stage '{self.stage}' diverged: the loss is {value} at step "
            f"{trainer.global_step} (epoch {trainer.current_epoch}); training "
            f"stopped before applying it, the last finite checkpoint is kept in "
            f"{self.checkpoint_dir}. To fix: {FIXES}"
        )
