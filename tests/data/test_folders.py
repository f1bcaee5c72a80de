from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_graft.data import open_dataset
from lightly_graft.errors import DataError


def _image_dir(root: Path, classes: dict[str, int], size: int = 12) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (size, size + 2), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_folder__train_and_val_subfolders(tmp_path: Path) -> None:
    _image_dir(tmp_path / "train", {"cat": 3, "dog": 2})
    _image_dir(tmp_path / "val", {"dog": 2})  # a class missing from val
    train = open_dataset(tmp_path, train=True)
    val = open_dataset(tmp_path, train=False)
    assert len(train) == 5 and train.classes == ["cat", "dog"]
    assert len(val) == 2
    # "dog" keeps the training index 1 although val has no "cat" folder.
    assert val.targets == [1, 1]
    image, label = val[0]
    assert image.mode == "RGB" and image.size == (14, 12) and label == 1


def test_folder__test_folder_beside_class_folders(tmp_path: Path) -> None:
    _image_dir(tmp_path, {"a": 2, "b": 2})
    _image_dir(tmp_path / "test", {"a": 1, "b": 1})
    train = open_dataset(tmp_path, train=True)
    held_out = open_dataset(tmp_path, train=False)
    assert train.classes == ["a", "b"]  # "test" is not a class
    assert len(train) == 4 and sorted(held_out.targets) == [0, 1]


def test_folder__seeded_fraction_held_out_is_disjoint(tmp_path: Path) -> None:
    _image_dir(tmp_path, {"a": 10, "b": 10})
    train = open_dataset(tmp_path, train=True, holdout_fraction=0.25, seed=3)
    held = open_dataset(tmp_path, train=False, holdout_fraction=0.25, seed=3)
    again = open_dataset(tmp_path, train=False, holdout_fraction=0.25, seed=3)
    other = open_dataset(tmp_path, train=False, holdout_fraction=0.25, seed=4)
    train_files = {p for p, _ in train.samples}
    held_files = {p for p, _ in held.samples}
    assert (len(train_files), len(held_files)) == (15, 5)
    assert not train_files & held_files
    assert held.samples == again.samples
    assert held.samples != other.samples


def test_folder__missing_path_is_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"'{missing}' does not exist"):
        open_dataset(missing, train=True)


def test_folder__no_class_folders_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        open_dataset(tmp_path, train=True)


def test_folder__class_folders_without_images_is_data_error(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images"):
        open_dataset(tmp_path, train=True)


def test_folder__empty_val_folder_is_data_error(tmp_path: Path) -> None:
    _image_dir(tmp_path / "train", {"cat": 2})
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="held-out folder"):
        open_dataset(tmp_path, train=False)
