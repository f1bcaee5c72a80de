"""``SSLDataModule``: the training views and the labelled kNN bank/query sets.

One ``LightningDataModule`` per pipeline stage:

- ``train_dataloader``: the training split through the stage's view transform
  (lightly ``MAETransform`` or the two-view BYOL transform), batches of
  ``(views, labels)`` with ``views`` a list of (batch_size, 3, H, W) tensors.
  With ``batch_transform`` (batched views, :mod:`lightly_graft.data.batched_views`)
  the loader yields decoded ``(uint8 images, labels)`` and Lightning's
  ``on_after_batch_transfer`` hook makes the views there, on the training
  device, during training only (validation batches pass unchanged).
- ``knn_bank_dataloader``: a seeded subset of the training split through the
  deterministic evaluation transform, ``(images, labels)``.
- ``knn_query_dataloader``: a seeded subset of the held-out split, same transform.
- ``val_dataloader``: the query loader if ``online_eval`` (for the methods'
  online classifier), else none (no validation loop).

Under DDP Lightning shards the training loader with a ``DistributedSampler``;
the kNN loaders are sharded by the kNN monitor itself.

The batched views' random stream is seeded from ``seed`` (the recipe's, which
also seeds ``seed_everything``) and, at the first training batch, the global
rank; it is saved in Lightning checkpoints through ``state_dict`` /
``load_state_dict`` and so continues where it stopped on resume.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from annotated_types import Ge, Interval
from torch.utils.data import DataLoader, Dataset, Subset

from lightly_graft.data.batched_views import BatchedViews
from lightly_graft.data.datasets import open_dataset
from lightly_graft.data.sampler import EpochShuffle
from lightly_graft.errors import DataError
from lightly_graft.signatures import check_bounds


def seeded_subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """A random subset of ``size`` items (all of them if None or larger)."""
    total = len(dataset)  # type: ignore[arg-type]
    if size is None or size >= total:
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(total, generator=generator)[:size].sort().values
    return Subset(dataset, indices.tolist())


def view_seed(seed: int, rank: int) -> int:
    """Seed of the batched views' stream on a rank (each rank its own)."""
    return seed + 100_003 * rank


class SSLDataModule(pl.LightningDataModule):
    """Training views plus labelled kNN bank and query loaders.

    Args:
        data: ``"default"`` (embedded Fashion-MNIST) or an ImageFolder directory.
        train_transform: PIL image -> list of view tensors, or, with
            ``batch_transform``, -> decoded uint8 tensor (``decode_transform``).
        batch_transform: Makes the training views from a decoded batch on its
            device (None: the per-image ``train_transform`` makes them).
        eval_transform: PIL image -> (3, H, W) tensor, deterministic.
        batch_size: Training batch size per device.
        eval_batch_size: Batch size for embedding the kNN bank and queries (the
            kNN/validation loaders).
        num_workers: DataLoader worker processes (0: the training process).
        knn_bank_size: Training images in the kNN bank (null: all).
        knn_query_size: Held-out images in the kNN query set (null: all).
        holdout_fraction: Fraction held out for kNN queries when a folder has no
            ``val/`` or ``test/``.
        skip_unreadable: Skip images that cannot be decoded instead of stopping
            with a :class:`DataError` naming the file; they are counted and their
            paths appended to ``unreadable_log`` (in a run: the stage's
            ``unreadable.txt``, and the report).
        online_eval: Whether ``val_dataloader`` gives the query set (for the
            methods' online linear classifier) or nothing.
        seed: Seeds the subsets and the held-out draw.
    """

    def __init__(
        self,
        *,
        data: str = "default",
        train_transform: Callable[[Any], Any],
        batch_transform: BatchedViews | None = None,
        eval_transform: Callable[[Any], Any],
        batch_size: int,
        eval_batch_size: Annotated[int, Ge(1)] = 256,
        num_workers: Annotated[int, Ge(0)] = 0,
        knn_bank_size: Annotated[int, Ge(1)] | None = 10_000,
        knn_query_size: Annotated[int, Ge(1)] | None = 2_000,
        holdout_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.1,
        online_eval: bool = False,
        skip_unreadable: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_bounds(SSLDataModule, locals())
        self.data = data
        self.train_transform = train_transform
        self.batch_transform = batch_transform
        if batch_transform is not None:
            batch_transform.manual_seed(view_seed(seed, 0))
        # Re-seeded for its rank at the first training batch, unless restored.
        self._views_seeded = False
        self.eval_transform = eval_transform
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.knn_bank_size = knn_bank_size
        self.knn_query_size = knn_query_size
        self.holdout_fraction = holdout_fraction
        self.online_eval = online_eval
        self.skip_unreadable = skip_unreadable
        #: Where skipped image paths are appended (set by the run, per stage).
        self.unreadable_log: Path | None = None
        self.seed = seed
        self.train_set: Dataset | None = None
        #: The training order (seeded per epoch; a resume fast-forwards it).
        self.train_sampler: EpochShuffle | None = None
        self.bank_set: Dataset | None = None
        self.query_set: Dataset | None = None

    def _open(self, *, train: bool, transform: Callable[[Any], Any]) -> Dataset:
        return open_dataset(
            self.data,
            train=train,
            transform=transform,
            holdout_fraction=self.holdout_fraction,
            seed=self.seed,
            skip_unreadable=self.skip_unreadable,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._open(train=True, transform=self.train_transform)
        if len(self.train_set) < self.batch_size:  # type: ignore[arg-type]
            raise DataError(
                f"data '{self.data}' has {len(self.train_set)} training images, "  # type: ignore[arg-type]
                f"fewer than one batch ({self.batch_size}): lower the stage's "
                "batch_size or add images"
            )
        # The training split again, with the eval transform: a shallow copy, not
        # a second open (which re-walks an ImageFolder tree).
        bank = copy.copy(self.train_set)
        bank.transform = self.eval_transform  # type: ignore[attr-defined]
        query = self._open(train=False, transform=self.eval_transform)
        self.bank_set = seeded_subset(bank, self.knn_bank_size, self.seed)
        self.query_set = seeded_subset(query, self.knn_query_size, self.seed + 1)

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        assert dataset is not None, "setup() builds the datasets first"
        inner = getattr(dataset, "dataset", dataset)  # through a Subset
        if hasattr(inner, "unreadable_log"):
            inner.unreadable_log = self.unreadable_log
        sampler = None
        generator = None
        if train:
            if self.train_sampler is None:
                self.train_sampler = EpochShuffle(len(dataset), self.seed)  # type: ignore[arg-type]
            sampler = self.train_sampler
            # Worker seeds from the loader's own generator, not the global RNG.
            generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0 and train,
            generator=generator,
        )

    def training_views(self, batch: Sequence[Any]) -> list[Any]:
        """``(uint8 images, labels, ...)`` -> ``(views, labels, ...)`` with the
        batched views (what the hook does during training)."""
        assert self.batch_transform is not None, "no batch_transform"
        images, *rest = batch
        return [self.batch_transform(images), *rest]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if self.batch_transform is None or trainer is None or not trainer.training:
            return batch
        if not self._views_seeded:
            self.batch_transform.manual_seed(view_seed(self.seed, trainer.global_rank))
            self._views_seeded = True
        return self.training_views(batch)

    def state_dict(self) -> dict[str, Any]:
        if self.batch_transform is None:
            return {}
        return {"batch_views": self.batch_transform.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.batch_transform is not None and "batch_views" in state_dict:
            self.batch_transform.load_state_dict(state_dict["batch_views"])
            self._views_seeded = True

    def resume_at(self, epoch: int, samples: int) -> None:
        """The next training iteration starts epoch ``epoch``'s order at sample
        ``samples`` (a resumed run; see :class:`EpochShuffle`)."""
        self.setup()
        if self.train_sampler is None:
            self.train_sampler = EpochShuffle(len(self.train_set), self.seed)  # type: ignore[arg-type]
        self.train_sampler.fast_forward(epoch, samples)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, train=True)

    def knn_bank_dataloader(self) -> DataLoader:
        """Labelled training subset, eval transform: batches of (images, labels)."""
        self.setup()
        return self._loader(self.bank_set, train=False)

    def knn_query_dataloader(self) -> DataLoader:
        """Labelled held-out subset, eval transform: batches of (images, labels)."""
        self.setup()
        return self._loader(self.query_set, train=False)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.knn_query_dataloader() if self.online_eval else []

    @property
    def num_classes(self) -> int:
        """Number of classes of the training split."""
        self.setup()
        return len(self.train_set.classes)  # type: ignore[union-attr]
