"""The embedded default dataset: Fashion-MNIST from Debian's ``dataset-fashion-mnist``.

Fashion-MNIST (Xiao et al., 2017, https://github.com/zalandoresearch/fashion-mnist,
MIT licence): 60,000 training and 10,000 test images of 28x28 grayscale clothing
items in 10 classes. Debian ships the original IDX files, gzip-compressed, in
``/usr/share/datasets/fashion-mnist/``; nothing is downloaded.

torchvision's MNIST-family readers (``torchvision.datasets.mnist.read_image_file``)
open the file with a plain ``open`` and so cannot read the ``.gz`` files, and its
``FashionMNIST`` dataset wants its own ``raw/`` folder layout and tries to download
otherwise; hence the few lines of numpy here.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lightly_graft.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist`"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Per-channel statistics of the 60k training images (pixel values / 255); the
# images are grayscale, so the three RGB channels share them.
NORMALIZE = {"mean": [0.2860, 0.2860, 0.2860], "std": [0.3530, 0.3530, 0.3530]}

_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dims.
_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) of unsigned bytes.

    Format: http://yann.lecun.com/exdb/mnist/ ("the IDX file format"): a 4-byte
    magic ``0, 0, type, ndim``, then ``ndim`` big-endian int32 sizes, then the data.

    Args:
        path: The ``.gz`` or uncompressed IDX file.

    Returns:
        A uint8 array of the stored shape, e.g. (num_images, 28, 28) or (num_labels,).

    Raises:
        DataError: The file is missing or not an IDX file of unsigned bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file '{path}' does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file '{path}': {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise DataError(
            f"'{path}' is not an IDX file of unsigned bytes (magic {data[:4].hex()})"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">i4"))
    if len(data) - header != int(np.prod(shape)):
        raise DataError(
            f"IDX file '{path}' is truncated: header says shape {shape}, "
            f"found {len(data) - header} bytes of data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def missing_problem(
    root: str | Path, splits: tuple[bool, ...] = (True, False)
) -> str | None:
    """Why the files of the ``splits`` (True: training) are not all in ``root``,
    or None."""
    for file in (Path(root) / name for train in splits for name in _FILES[train]):
        if not file.is_file():
            return (
                f"the default dataset (Fashion-MNIST) is missing: '{file}' does not "
                f"exist; {INSTALL_HINT}, or name an ImageFolder directory instead of "
                "'default'"
            )
    return None


@functools.lru_cache(maxsize=4)
def load_arrays(root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Loads the images (N, 28, 28) uint8 and labels (N,) int64 of one split."""
    problem = missing_problem(root, (train,))
    if problem is not None:
        raise DataError(problem)
    image_file, label_file = (Path(root) / name for name in _FILES[train])
    images = read_idx(image_file)
    labels = read_idx(label_file).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"'{image_file}' and '{label_file}' do not match: images {images.shape}, "
            f"labels {labels.shape}; reinstall with "
            "`apt-get install --reinstall dataset-fashion-mnist`"
        )
    return images, labels


class FashionMNIST(Dataset):
    """Fashion-MNIST as ``(PIL RGB image, label)`` pairs.

    The grayscale images are converted to 3 channels so that lightly's colour
    transforms and a standard 3-channel ViT apply unchanged.

    Args:
        train: The 60k training split if True, else the 10k test split.
        transform: Applied to the PIL image (e.g. a lightly multi-view transform).
        root: The folder with the four IDX ``.gz`` files.
    """

    classes = CLASSES

    def __init__(
        self,
        *,
        train: bool,
        transform: Callable[[Image.Image], Any] | None = None,
        root: str | Path = FASHION_MNIST_DIR,
    ) -> None:
        self.train = train
        self.transform = transform
        self.root = Path(root)
        self.images, self.labels = load_arrays(str(self.root), train)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        """A DataLoader batch: through the transform's ``on_uint8_batch`` when it
        has one that takes 28 px (the decode and eval transforms), from the
        arrays at once; else image by image. The same values either way."""
        on_batch = getattr(self.transform, "on_uint8_batch", None)
        if on_batch is not None:
            gray = torch.from_numpy(self.images[indices])
            out = on_batch(gray[:, None].expand(-1, 3, -1, -1))  # as convert("RGB")
            if out is not None:
                return list(
                    zip(out.unbind(0), self.labels[indices].tolist(), strict=True)
                )
        return [self[index] for index in indices]

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"FashionMNIST(split={split}, size={len(self)}, root='{self.root}')"
