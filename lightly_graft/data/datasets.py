"""``open_dataset``: one entry point for every data spec.

A data spec is ``"default"`` (the embedded Fashion-MNIST, see
:mod:`lightly_graft.data.fashion_mnist`) or the path of an ``ImageFolder``-style
directory (see :mod:`lightly_graft.data.folders`). Every dataset yields
``(PIL RGB image, label)`` pairs, transformed by ``transform`` if given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lightly_graft.data import fashion_mnist
from lightly_graft.data.folders import folder_problem, open_image_folder

DEFAULT = "default"


def data_problem(spec: str | Path) -> str | None:
    """Why a data spec cannot be opened (the files of Fashion-MNIST missing, no
    directory, no class folders), or None: what :func:`open_dataset` raises."""
    if str(spec) == DEFAULT:
        return fashion_mnist.missing_problem(fashion_mnist.FASHION_MNIST_DIR)
    return folder_problem(spec)


def open_dataset(
    spec: str | Path,
    *,
    train: bool,
    transform: Callable[[Image.Image], Any] | None = None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    skip_unreadable: bool = False,
) -> Dataset:
    """Opens the training or held-out split named by a data spec.

    Args:
        spec: ``"default"`` or an ImageFolder-style directory.
        train: The training split if True, else the held-out (test/val) split.
        transform: Applied to each PIL RGB image.
        holdout_fraction: For a directory without ``val/``/``test/``: the fraction
            of its images held out.
        seed: Seeds that held-out draw.
        skip_unreadable: Skip images that cannot be decoded (ImageFolder only).

    Returns:
        A dataset of ``(image, label)`` with a ``classes`` attribute (names) and
        ``targets`` (list of labels).

    Raises:
        DataError: The data is missing or malformed; the message says how to fix it.
    """
    if str(spec) == DEFAULT:
        return fashion_mnist.FashionMNIST(train=train, transform=transform)
    return open_image_folder(
        spec,
        train=train,
        transform=transform,
        holdout_fraction=holdout_fraction,
        seed=seed,
        skip_unreadable=skip_unreadable,
    )


def default_normalize(spec: str | Path) -> dict[str, list[float]]:
    """The normalisation statistics to use for a data spec.

    Fashion-MNIST's own statistics for ``"default"``, ImageNet's otherwise (what
    timm and lightly assume for natural images).
    """
    if str(spec) == DEFAULT:
        return {k: list(v) for k, v in fashion_mnist.NORMALIZE.items()}
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    return {k: list(v) for k, v in IMAGENET_NORMALIZE.items()}


def native_image_size(spec: str | Path) -> int | None:
    """The image size of a data spec, if fixed (28 for Fashion-MNIST), else None."""
    return 28 if str(spec) == DEFAULT else None
