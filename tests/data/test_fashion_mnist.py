from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_graft.data import FashionMNIST, open_dataset, read_idx
from lightly_graft.data.fashion_mnist import FASHION_MNIST_DIR, load_arrays
from lightly_graft.errors import DataError

needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="apt-get install -y dataset-fashion-mnist",
)


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    header = (
        bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    )
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_read_idx__round_trip_gzip_and_plain(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    _write_idx(tmp_path / "a.idx", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)


def test_read_idx__truncated_file_is_data_error(tmp_path: Path) -> None:
    array = np.zeros((2, 3, 4), dtype=np.uint8)
    _write_idx(tmp_path / "a.idx", array, compress=False)
    (tmp_path / "b.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "b.idx")


def test_read_idx__not_idx_is_data_error(tmp_path: Path) -> None:
    (tmp_path / "x.idx").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "x.idx")


@needs_fashion_mnist
def test_fashion_mnist__counts_labels_and_shape() -> None:
    train = FashionMNIST(train=True)
    test = FashionMNIST(train=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    # The dataset is balanced: 6,000 / 1,000 images per class.
    assert np.bincount(train.labels).tolist() == [6_000] * 10
    assert np.bincount(test.labels).tolist() == [1_000] * 10
    image, label = test[0]
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB" and image.size == (28, 28)
    # The first test image is an ankle boot (label 9), per the dataset's README.
    assert label == 9
    pixels = np.asarray(image)
    np.testing.assert_array_equal(pixels[..., 0], test.images[0])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


@needs_fashion_mnist
def test_open_dataset__default_applies_transform() -> None:
    dataset = open_dataset("default", train=False, transform=lambda im: im.size)
    assert dataset[3] == ((28, 28), int(dataset.targets[3]))


def test_fashion_mnist__missing_files_name_the_install_command(tmp_path: Path) -> None:
    load_arrays.cache_clear()
    with pytest.raises(DataError) as info:
        FashionMNIST(train=True, root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "apt-get install -y dataset-fashion-mnist" in message


def test_fashion_mnist__mismatched_files_is_data_error(tmp_path: Path) -> None:
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((2,)))
    with pytest.raises(DataError, match="do not match"):
        FashionMNIST(train=False, root=tmp_path)


@needs_fashion_mnist
@pytest.mark.parametrize("kind", ["decode", "eval", "eval_resized", "none"])
def test_getitems__batch_fast_path_equals_image_by_image(kind: str) -> None:
    # The DataLoader fetches through __getitems__: the decode and eval
    # transforms at 28 px take the arrays at once, which must give bitwise the
    # values (and dtypes, and int labels) of the per-image PIL path; at another
    # size, or without a transform, it falls back to the per-image path.
    import torch
    from torch.utils.data import DataLoader, Subset, default_collate

    from lightly_graft.data import decode_transform, default_normalize, eval_transform

    normalize = default_normalize("default")
    transform = {
        "decode": decode_transform(input_size=28),
        "eval": eval_transform(input_size=28, normalize=normalize),
        "eval_resized": eval_transform(input_size=32, normalize=normalize),
        "none": None,
    }[kind]
    dataset = FashionMNIST(train=False, transform=transform)
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    indices = indices[:64].tolist()
    fast = dataset.__getitems__(indices)
    slow = [dataset[i] for i in indices]
    assert [label for _, label in fast] == [label for _, label in slow]
    assert all(isinstance(label, int) for _, label in fast)
    if kind == "none":
        assert all(isinstance(image, Image.Image) for image, _ in fast)
        return
    for (a, _), (b, _) in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    subset = Subset(dataset, indices)  # the kNN bank and query sets are subsets
    batch = next(iter(DataLoader(subset, batch_size=64)))
    expected = default_collate(slow)
    assert torch.equal(batch[0], expected[0]) and torch.equal(batch[1], expected[1])


@needs_fashion_mnist
def test_getitems__eval_fast_path_equals_per_image_in_float64() -> None:
    # Normalize converts mean and std to the tensor's dtype; the batched form
    # must too, or a float64 default dtype would round the statistics to float32.
    import torch

    from lightly_graft.data import default_normalize, eval_transform

    transform = eval_transform(input_size=28, normalize=default_normalize("default"))
    dataset = FashionMNIST(train=False, transform=transform)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        fast = dataset.__getitems__([0, 1, 2])
        slow = [dataset[i] for i in (0, 1, 2)]
    finally:
        torch.set_default_dtype(previous)
    for (a, _), (b, _) in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype == torch.float64
        assert torch.equal(a, b)
