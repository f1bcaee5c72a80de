"""A seeded, epoch-indexed shuffle that a resumed run can fast-forward.

``EpochShuffle`` draws epoch ``e``'s order from its own generator seeded with
``(seed, e)``, never from the global RNG, so the order of any epoch can be made
again at will. ``fast_forward(epoch, samples)`` makes the next iteration start
that epoch's order at sample ``samples`` (once): a run resumed from a
checkpoint taken after ``k`` batches of an epoch then sees exactly the batches
that the uninterrupted run saw next. Lightning calls ``set_epoch`` before every
epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

_EPOCH_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs do not collide in practice


class EpochShuffle(Sampler[int]):
    """Random order of ``range(size)``, a function of ``(seed, epoch)`` only.

    Args:
        size: Number of samples.
        seed: Seeds every epoch's order.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def fast_forward(self, epoch: int, samples: int) -> None:
        """The next iteration gives epoch ``epoch``'s order from ``samples`` on."""
        self.epoch = epoch
        self._start = samples

    def order(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s full order."""
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        yield from self.order(self.epoch)[start:]

    def __len__(self) -> int:
        return self.size
