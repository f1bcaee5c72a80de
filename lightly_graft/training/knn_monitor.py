"""KNNMonitor: weighted kNN accuracy of the current backbone during training.

lightly's ``KNNClassifier`` is a LightningModule for a separate evaluation run
(it collects the bank in its own training epoch); it cannot observe another
module's training, hence this callback. It only reads: every ``every_n_epochs`` training epochs it embeds a
labelled bank and a labelled query set with ``pl_module(images)`` in eval mode
under ``torch.no_grad()``, classifies the queries with
:func:`lightly_graft.functional.knn.knn_classify` and logs ``knn/top1``,
``knn/top5`` (fractions in [0, 1]) and ``knn/seconds``. It restores the
train/eval flag of every submodule and the RNG states it found.

Under DDP each rank embeds its own shard of each dataset (indices
``rank, rank + world_size, ...``: uneven sizes work, nothing is duplicated); the
features are gathered on every rank in dataset order, so the search and the
result are those of a single process.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from annotated_types import Ge, Gt
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lightly_graft.errors import DataError
from lightly_graft.functional.accuracy import top_accuracy
from lightly_graft.functional.knn import Backend, knn_classify
from lightly_graft.modules.embed import embed_batches
from lightly_graft.signatures import check_bounds


class KNNMonitor(pl.Callback):
    """Logs weighted-kNN top-1/top-5 accuracy of ``pl_module(images)`` features.

    Args:
        bank_loader: Labelled data whose features form the kNN bank; batches are
            ``(images, labels, ...)``. Its dataset, batch size, workers and
            collate function are used; its sampler is not (every sample is
            embedded once, in dataset order).
        query_loader: Labelled data to classify, same format.
        every_n_epochs: Evaluate after every n-th training epoch.
        k: Number of neighbours (InstDisc / lightly default 200).
        temperature: Temperature of the neighbours' weighted vote.
        num_classes: Number of classes; ``None`` infers ``max label + 1``.
        backend: kNN backend, see :func:`knn_classify`.
        at_train_start: Also evaluate once before the first training epoch.
        chunk_size: Queries per search chunk (memory bound only).

    Attributes:
        history: One dict per evaluation: ``epoch`` (training epochs completed,
            0 before training), ``step`` (global step), ``top1``, ``top5``
            (fractions) and ``seconds``.
    """

    def __init__(
        self,
        bank_loader: DataLoader,
        query_loader: DataLoader,
        every_n_epochs: Annotated[int, Ge(1)] = 1,
        k: Annotated[int, Ge(1)] = 200,
        temperature: Annotated[float, Gt(0)] = 0.1,
        num_classes: int | None = None,
        backend: Backend = "auto",
        at_train_start: bool = False,
        chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        check_bounds(KNNMonitor, locals())
        self.bank_loader = bank_loader
        self.query_loader = query_loader
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.num_classes = num_classes
        self.backend = backend
        self.at_train_start = at_train_start
        self.chunk_size = chunk_size
        self.history: list[dict[str, float]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            every_n_epochs=self.every_n_epochs, k=self.k, temperature=self.temperature
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        if self.at_train_start:
            metrics = self._record(trainer, pl_module)
            # self.log is not allowed with on_epoch semantics here: log directly.
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self._record(trainer, pl_module, epoch=trainer.current_epoch + 1)
        for name, value in metrics.items():
            # Every rank holds the same value: no reduction needed. For the
            # progress bar and ``ModelCheckpoint(monitor=...)`` only: the loggers
            # get the row below, at once.
            pl_module.log(name, value, prog_bar=name == "knn/top1", logger=False)
        # Written and flushed now, before this epoch's checkpoint: a run killed
        # after the checkpoint keeps the row (Lightning would buffer it).
        row = {**metrics, "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)
            logger.save()

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def _record(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int = 0
    ) -> dict[str, float]:
        result = self.evaluate(pl_module)
        self.history.append({"epoch": epoch, "step": trainer.global_step, **result})
        return {f"knn/{name}": value for name, value in result.items()}

    def evaluate(self, pl_module: nn.Module) -> dict[str, float]:
        """Embeds both sets and classifies the queries; changes no module state.

        Works without a trainer. Under ``torch.distributed`` every rank must call
        it (features are gathered across ranks).

        Returns:
            ``{"top1": ..., "top5": ..., "seconds": ...}``, accuracies as fractions.
        """
        start = time.perf_counter()
        with _preserved_rng():
            bank, bank_labels = _embed(pl_module, self.bank_loader)
            queries, query_labels = _embed(pl_module, self.query_loader)
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        predictions = knn_classify(
            queries,
            bank,
            bank_labels,
            num_classes,
            k=self.k,
            temperature=self.temperature,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        top1, top5 = top_accuracy(predictions, query_labels)
        return {"top1": top1, "top5": top5, "seconds": time.perf_counter() - start}


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restores the torch (CPU, CUDA), numpy and Python RNG states on exit.

    Iterating a DataLoader draws a seed from torch's generator, and transforms
    may draw more: the monitor must not shift the training run's random stream.
    """
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _embed(module: nn.Module, loader: DataLoader) -> tuple[Tensor, Tensor]:
    """Features and labels of the loader's dataset, in dataset order.

    Returns:
        features (num_samples, dim) float and labels (num_samples,) long, on the
        module's device, gathered over all ranks under ``torch.distributed``.
    """
    rank, world = _rank_and_world()
    size = len(loader.dataset)  # type: ignore[arg-type]
    if size < world:
        raise DataError(
            f"a kNN set of {size} samples cannot be sharded over {world} processes; "
            "use at least one sample per process."
        )
    embedded = embed_batches(module, _shard_loader(loader, rank, world))
    assert embedded is not None, "a shard holds at least one sample"
    local = embedded
    if world == 1:
        return local
    return _gather_in_order(local[0], size, world), _gather_in_order(
        local[1], size, world
    )


def _shard_loader(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """A sequential loader over the dataset indices ``rank, rank + world, ...``."""
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", 256)
    indices = list(range(rank, len(loader.dataset), world))  # type: ignore[arg-type]
    return DataLoader(
        Subset(loader.dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def _gather_in_order(local: Tensor, size: int, world: int) -> Tensor:
    """All-gathers per-rank shards (rank r holds indices r, r + world, ...).

    Shards are padded to ``ceil(size / world)`` rows so that every rank sends the
    same shape; interleaving the gathered shards restores dataset order and the
    padding lands past ``size``.

    Args:
        local: This rank's rows, (shard_size, ...).

    Returns:
        All rows in dataset order, (size, ...).
    """
    per_rank = math.ceil(size / world)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    # (per_rank, world, ...): row i of rank r is dataset index i * world + r.
    interleaved = torch.stack(gathered, dim=1).flatten(0, 1)
    return interleaved[:size]


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
