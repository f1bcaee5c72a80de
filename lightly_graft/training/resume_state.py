"""What a resumed stage needs to continue exactly as the uninterrupted one.

Lightning restores the weights, optimizer, schedulers, loop counters and the
datamodule's state from a checkpoint, but not the global random generators nor
the position inside an epoch's shuffle. ``ResumeState`` keeps, after every
training batch, a snapshot of the torch (CPU and CUDA), numpy and python
generators and of the datamodule's state (the batched views' generator), with
the epoch and the number of batches done; every checkpoint saves the latest
snapshot as this callback's state. On resume it puts the generators back and
fast-forwards the datamodule's :class:`~lightly_graft.data.sampler.EpochShuffle`
to the next batch.

Guarantee (one process, a fixed seed, deterministic kernels, as on the CPU): a
stage resumed from a checkpoint taken at an epoch boundary (``last.ckpt``), or
from ``on_exception.ckpt`` after Ctrl-C mid-epoch, ends with the same weights
and metrics, bit for bit, as the uninterrupted stage. Mid-epoch that holds when
the loader only decodes (``data.augment.batched``, the default); with
per-image augmentation it holds at epoch boundaries.

Two more parts keep a stage resumable: ``AtomicCheckpointIO`` writes each
checkpoint whole or not at all, and ``StageClock`` carries the stage's training
time across sessions.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightly_graft.files import save_atomic


def _numpy_state() -> tuple[Any, ...]:
    state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, gauss = state
    # As a tensor: Lightning checkpoints stay loadable with weights_only=True.
    return (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)


def _set_numpy_state(state: tuple[Any, ...]) -> None:
    kind, keys, pos, has_gauss, gauss = state
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


class ResumeState(pl.Callback):
    """See the module docstring.

    Args:
        datamodule: The stage's :class:`~lightly_graft.data.SSLDataModule`.
    """

    def __init__(self, datamodule: Any) -> None:
        self.datamodule = datamodule
        self.snapshot: dict[str, Any] = {}
        self._restored = False

    def _take(self, epoch: int, batches: int) -> None:
        self.snapshot = {
            "epoch": epoch,
            "batches": batches,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(),
            "python": random.getstate(),
            "datamodule": copy.deepcopy(self.datamodule.state_dict()),
        }

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._take(trainer.current_epoch, batch_idx + 1)

    def on_train_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        if self.snapshot:  # the next epoch starts at its first batch
            self.snapshot = {
                **self.snapshot,
                "epoch": trainer.current_epoch + 1,
                "batches": 0,
            }

    def on_train_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._restored and trainer.accumulate_grad_batches == 1:
            # Lightning adds one to its logging step on a mid-epoch restart, as
            # if the checkpoint had been written after a batch's step; one
            # written inside a batch (Ctrl-C) is before it. With one optimizer
            # and no accumulation the step is the number of optimizer steps.
            trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        return dict(self.snapshot)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:  # saved before the first batch ended: nothing to redo
            return
        self.snapshot = dict(state_dict)
        self._restored = True
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        _set_numpy_state(state_dict["numpy"])
        random.setstate(state_dict["python"])
        if state_dict["datamodule"]:
            self.datamodule.load_state_dict(state_dict["datamodule"])
        self.datamodule.resume_at(
            state_dict["epoch"], state_dict["batches"] * self.datamodule.batch_size
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint writer, through a temporary file,
    fsync and rename (:func:`~lightly_graft.files.save_atomic`): a crash while
    writing ``last.ckpt`` leaves the previous one whole."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)


class StageClock(pl.Callback):
    """The stage's training time over every session: saved in each checkpoint
    (Lightning's callback state) and restored on ``--resume``."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier sessions, up to their checkpoint
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
