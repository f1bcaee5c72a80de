"""GradientConflictMonitor: logs the per-block MIM/CL gradient cosine while training.

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Section 2.2, Eq. 3 and Fig. 1:
in multi-task training (MTL: MIM loss + CL loss on one encoder) the cosine between
the two losses' gradients falls, and turns negative more often, as blocks go deeper.
This callback measures that cosine on live training batches.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from annotated_types import Ge
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightly_graft.functional.gradients import (
    DEFAULT_TERMS,
    block_parameters,
    terms_gradient_cosine,
)
from lightly_graft.signatures import check_bounds


class GradientConflictMonitor(pl.Callback):
    """Every N steps, the per-block cosine between two loss terms' gradients (Eq. 3).

    For a run whose LightningModule has ``loss_terms(views) -> dict[str, Tensor]``
    (the MTL method: ``"mim"`` and ``"cl"``) and its online encoder at
    ``backbone.vit`` (a timm VisionTransformer). At the start of every
    ``every_n_steps``-th optimizer step, on the batch about to be trained on, it
    computes both terms, takes their gradients with respect to each block's
    parameters with ``torch.autograd.grad`` (nothing is accumulated into
    ``.grad``; the optimizer is not touched) and logs, per block, the median of
    the last ``window`` measurements as ``grad_conflict/block_{i}`` (0 = lowest).

    It only observes: the extra forward runs under ``torch.random.fork_rng`` (the
    training run draws the same random masks as without the monitor), BatchNorm
    running statistics are restored afterwards, and every parameter's ``.grad``
    is put back as it was. It costs one extra forward and two backward passes per
    measurement. Under DDP each rank measures its own shard; the logger records
    rank 0's values.

    Args:
        every_n_steps: Measure at every N-th optimizer step (when
            ``trainer.global_step`` is a multiple of N).
        window: Log the median of the last N measurements (1: each one).
        terms: Names of the two entries of ``loss_terms`` to compare.
        log_prefix: Metric names are ``{log_prefix}/block_{i}``.
    """

    def __init__(
        self,
        every_n_steps: Annotated[int, Ge(1)] = 100,
        window: Annotated[int, Ge(1)] = 10,
        terms: tuple[str, str] = DEFAULT_TERMS,
        log_prefix: str = "grad_conflict",
    ) -> None:
        check_bounds(GradientConflictMonitor, locals())
        if len(terms) != 2 or terms[0] == terms[1]:
            raise ValueError(
                f"GradientConflictMonitor compares two different loss terms, got "
                f"terms={terms!r}."
            )
        self.every_n_steps = every_n_steps
        self.window = window
        self.terms = terms
        self.log_prefix = log_prefix
        self.history: dict[int, deque[float]] = {}
        self._last_step = -1

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        if not callable(getattr(pl_module, "loss_terms", None)):
            raise TypeError(
                f"GradientConflictMonitor needs a module with loss_terms(views) -> "
                f"dict[str, Tensor] (e.g. the 'mtl' method); "
                f"{type(pl_module).__name__} has none."
            )
        _encoder_blocks(pl_module)

    def on_train_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps != 0 or step == self._last_step:
            return  # gradient accumulation: measure once per optimizer step
        self._last_step = step
        cosines = self.measure(pl_module, _views_of(batch))
        for block, value in cosines.items():
            history = self.history.setdefault(block, deque(maxlen=self.window))
            if not math.isnan(value):
                history.append(value)
            if history:
                pl_module.log(
                    f"{self.log_prefix}/block_{block}",
                    statistics.median(history),
                    on_step=True,
                    on_epoch=False,
                )

    def measure(
        self, pl_module: pl.LightningModule, views: Sequence[Tensor]
    ) -> dict[int, float]:
        """Per-block cosine on one batch of views, leaving the module as it was."""
        params_by_block = block_parameters(_encoder_blocks(pl_module))
        with _observe_only(pl_module), torch.enable_grad():
            return terms_gradient_cosine(
                pl_module.loss_terms(views),  # type: ignore[operator]
                self.terms,
                params_by_block,
                owner=f"loss_terms of {type(pl_module).__name__}",
                fix="set GradientConflictMonitor(terms=...) to two of those names",
            )


def _encoder_blocks(pl_module: nn.Module) -> Sequence[nn.Module]:
    vit = getattr(getattr(pl_module, "backbone", None), "vit", None)
    blocks = getattr(vit, "blocks", None)
    if blocks is None:
        raise TypeError(
            f"GradientConflictMonitor looks for the encoder's blocks at "
            f"backbone.vit.blocks; {type(pl_module).__name__} has none."
        )
    return list(blocks)


def _views_of(batch: Any) -> Sequence[Tensor]:
    # Methods take batches (views, targets, ...) or (views,); views is a list.
    if (
        isinstance(batch, (list, tuple))
        and batch
        and isinstance(batch[0], (list, tuple))
    ):
        return batch[0]
    raise TypeError(
        f"GradientConflictMonitor expects batches (views, targets, ...) with views a "
        f"list of tensors, got {type(batch).__name__}."
    )


@contextmanager
def _observe_only(module: nn.Module) -> Iterator[None]:
    """Restores RNG state, BatchNorm statistics and every ``.grad`` on exit."""
    grads = [(p, p.grad) for p in module.parameters()]
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    buffers = [
        {name: b.detach().clone() for name, b in m.named_buffers(recurse=False)}
        for m in norms
    ]
    devices = sorted(
        {p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"}
    )
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for param, grad in grads:
            param.grad = grad
        with torch.no_grad():
            for norm, saved in zip(norms, buffers, strict=True):
                for name, value in saved.items():
                    getattr(norm, name).copy_(value)
