"""Checks of the files a recipe names, run before any training starts.

``check_inputs`` fails fast, with the key path and the fix, when the data path
or a graft checkpoint is missing or unreadable, so that a typo in the second
stage's checkpoint path does not surface after the first stage's hours.
Relative paths are taken from the current working directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from lightly_graft.data.datasets import DEFAULT
from lightly_graft.data.fashion_mnist import FASHION_MNIST_DIR, INSTALL_HINT
from lightly_graft.data.folders import split_layout
from lightly_graft.errors import RecipeError
from lightly_graft.recipes.schema import Recipe


def data_problems(path: str | None) -> Iterator[str]:
    """Problems with a data spec, as messages (empty if none)."""
    if path is None:
        yield (
            "is not set: give the dataset folder with --set data.path=DIR "
            "(ImageFolder style: DIR/train/<class>/*, DIR/val/<class>/*)"
        )
        return
    if path == DEFAULT:
        if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
            yield (
                f"'default' is the embedded Fashion-MNIST, but {FASHION_MNIST_DIR} "
                f"does not hold it: {INSTALL_HINT}"
            )
        return
    directory = Path(path).expanduser()
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        yield (
            f"'{path}' {what}: give an ImageFolder-style directory "
            "(DIR/<class>/<image>, or DIR/train and DIR/val) or 'default'"
        )
        return
    train_root, _, skip = split_layout(directory)
    if not any(p.is_dir() and p.name not in skip for p in train_root.iterdir()):
        yield f"'{path}' has no class folders: expected {train_root}/<class>/<image>"


def checkpoint_problems(path: str) -> Iterator[str]:
    """Problems with a checkpoint file that keep it from being read at all."""
    file = Path(path).expanduser()
    if not file.exists():
        yield f"'{path}' does not exist: give the path of a checkpoint file"
    elif not file.is_file():
        yield f"'{path}' is a directory, not a checkpoint file"
    elif not os.access(file, os.R_OK):
        yield f"'{path}' is not readable (permissions): chmod +r it or copy it"
    elif file.stat().st_size == 0:
        yield f"'{path}' is empty (0 bytes): the download or save was interrupted"


def input_problems(recipe: Recipe) -> Iterator[tuple[str, str]]:
    """Yields ``(key path, problem)`` for every unusable input of a recipe."""
    for problem in data_problems(recipe.data.path):
        yield "data.path", problem
    for i, stage in enumerate(recipe.stages):
        if stage.graft is not None and stage.graft.checkpoint is not None:
            for problem in checkpoint_problems(stage.graft.checkpoint):
                yield f"stages[{i}].graft.checkpoint", problem


def check_inputs(recipe: Recipe, *, source: str) -> None:
    """Raises one ``RecipeError`` listing every unusable input, if any.

    Args:
        recipe: The validated recipe.
        source: Names the recipe in the message, e.g. "recipe 'x.yaml'".
    """
    problems = [f"{path}: {message}" for path, message in input_problems(recipe)]
    if problems:
        raise RecipeError(f"{source}: " + "; ".join(problems))
