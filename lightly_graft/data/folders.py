"""Labelled ``ImageFolder``-style directories with a held-out split.

Layouts understood (class folders hold the images, as in torchvision's
``ImageFolder``)::

    DIR/train/<class>/*.jpg  DIR/val/<class>/*.jpg     (ImageNet style; or test/)
    DIR/<class>/*.jpg        DIR/val/<class>/*.jpg     (val/ or test/ beside classes)
    DIR/<class>/*.jpg                                  (no held-out folder)

The training split is ``DIR/train`` if it exists, else ``DIR`` itself (without
its ``val``/``test`` folders). The held-out split is ``DIR/val``, else
``DIR/test``; without either, a seeded fraction of the training images is held
out (and removed from the training split). Held-out class folders are mapped by
name onto the training classes, so their label indices always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, make_dataset

from lightly_graft.errors import DataError

HELD_OUT_NAMES = ("val", "test")


UNREADABLE_HINT = "set data.skip_unreadable: true to skip unreadable images"


class LabelledImages(Dataset):
    """A list of ``(image file, label)`` as ``(PIL RGB image, label)`` pairs.

    Args:
        samples: ``(path, class index)`` pairs.
        classes: Class names; ``classes[label]`` names a sample's class.
        transform: Applied to the PIL image.
        skip_unreadable: An image that cannot be decoded is replaced by the next
            readable one (and its path appended to ``unreadable_log`` if set)
            instead of raising :class:`DataError`.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        transform: Callable[[Image.Image], Any] | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        #: File that skipped paths are appended to (one per line; workers too).
        self.unreadable_log: Path | None = None

    def _load(self, index: int) -> tuple[Image.Image, int]:
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                return default_loader(path), label  # PIL, converted to RGB
            except (OSError, ValueError, SyntaxError) as error:
                if not self.skip_unreadable:
                    raise DataError(
                        f"image '{path}' cannot be read ({type(error).__name__}); "
                        f"repair or remove it, or {UNREADABLE_HINT}"
                    ) from None
                if self.unreadable_log is not None:
                    with open(self.unreadable_log, "a", encoding="utf-8") as log:
                        log.write(f"{path}\n")
        raise DataError(f"no image of the dataset can be read; {UNREADABLE_HINT}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self._load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        return f"LabelledImages(size={len(self)}, classes={len(self.classes)})"


def split_layout(directory: Path) -> tuple[Path, Path | None, set[str]]:
    """Finds the training root, the held-out root (or None) and names to skip."""
    train_root = directory / "train" if (directory / "train").is_dir() else directory
    held_out = next(
        (directory / n for n in HELD_OUT_NAMES if (directory / n).is_dir()), None
    )
    skip = set(HELD_OUT_NAMES) if train_root == directory else set()
    return train_root, held_out, skip


def _classes(root: Path, skip: set[str]) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in skip)


def train_classes(directory: Path) -> tuple[Path, list[str]]:
    """The training root of an image directory and its class folders' names."""
    train_root, _, skip = split_layout(directory)
    return train_root, _classes(train_root, skip)


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` is no image directory (none there, or no class folders), or
    None."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        return (
            f"'{path}' {what}: give an ImageFolder-style directory (DIR/<class>/"
            "<image>, or DIR/train and DIR/val) or 'default' for the embedded "
            "Fashion-MNIST"
        )
    train_root, classes = train_classes(directory)
    if not classes:
        return (
            f"'{train_root}' has no class folders: put the images of each class in "
            f"their own subfolder ({train_root}/<class>/<image>)"
        )
    return None


def _samples(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    present = {p.name for p in root.iterdir() if p.is_dir()}
    class_to_idx = {name: i for i, name in enumerate(classes) if name in present}
    return make_dataset(
        str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True
    )


def _held_out_indices(size: int, fraction: float, seed: int) -> set[int]:
    generator = torch.Generator().manual_seed(seed)
    count = max(1, round(size * fraction))
    return set(torch.randperm(size, generator=generator)[:count].tolist())


def open_image_folder(
    path: str | Path,
    *,
    train: bool,
    transform: Callable[[Image.Image], Any] | None = None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    skip_unreadable: bool = False,
) -> LabelledImages:
    """Opens one split of a labelled image directory (layouts: module docstring).

    Args:
        path: The directory.
        train: The training split if True, else the held-out split.
        transform: Applied to each PIL RGB image.
        holdout_fraction: Fraction of the training images held out when the
            directory has no ``val``/``test`` folder.
        seed: Seeds the held-out draw (the same seed gives disjoint splits).
        skip_unreadable: See :class:`LabelledImages`.

    Raises:
        DataError: Missing directory, no class folders, or no images.
    """
    problem = folder_problem(path)
    if problem is not None:
        raise DataError(f"data path {problem}")
    directory = Path(path).expanduser()
    train_root, held_out_root, skip = split_layout(directory)
    classes = _classes(train_root, skip)
    samples = _samples(train_root, classes)
    if not samples:
        raise DataError(
            f"data path '{train_root}' has class folders ({', '.join(classes[:5])}"
            f"{', ...' if len(classes) > 5 else ''}) but no images with the "
            f"extensions {', '.join(IMG_EXTENSIONS)}"
        )
    if held_out_root is not None:
        if train:
            return LabelledImages(samples, classes, transform, skip_unreadable)
        held_out = _samples(held_out_root, classes)
        if not held_out:
            raise DataError(
                f"held-out folder '{held_out_root}' has no images in class folders "
                f"named like the training classes ({', '.join(classes[:5])}...)"
            )
        return LabelledImages(held_out, classes, transform, skip_unreadable)
    if not 0.0 < holdout_fraction < 1.0 or len(samples) < 2:
        raise DataError(
            f"data path '{directory}' has no val/ or test/ folder, so a fraction of "
            f"its {len(samples)} images must be held out: holdout_fraction "
            f"{holdout_fraction} must be in (0, 1) and at least 2 images are needed"
        )
    held = _held_out_indices(len(samples), holdout_fraction, seed)
    chosen = [s for i, s in enumerate(samples) if (i in held) != train]
    return LabelledImages(chosen, classes, transform, skip_unreadable)
