"""A recipe key that is an argument of the library part its section configures
is that argument: its default, its text and its value constraint are the
signature's, so the recipe and the Python API refuse the same values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from lightly_graft.data import SSLDataModule
from lightly_graft.errors import GraftError, RecipeError
from lightly_graft.recipes import load_recipe
from lightly_graft.recipes.library import LibrarySection, arg_docs, library_default
from lightly_graft.recipes.schema import (
    AnchorConfig,
    DataConfig,
    GradientConflictConfig,
    GraftConfig,
    KNNConfig,
)
from lightly_graft.signatures import keyword_arguments
from lightly_graft.training.gradient_monitor import GradientConflictMonitor
from lightly_graft.training.grafting import Grafting
from lightly_graft.training.knn_monitor import KNNMonitor

SECTIONS: dict[type[LibrarySection], type] = {
    DataConfig: SSLDataModule,
    GraftConfig: Grafting,
    AnchorConfig: Grafting,
    KNNConfig: KNNMonitor,
    GradientConflictConfig: GradientConflictMonitor,
}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_section_keys__are_the_library_arguments(section: type) -> None:
    target = SECTIONS[section]
    owners = {a.name: a.owner for a in keyword_arguments(target)}
    assert section.library_names  # every such section sets some arguments
    for key, name in section.library_names.items():
        field = section.model_fields[key]
        assert field.default == library_default(target, name)
        assert field.description == arg_docs(owners[name])[name]


def _loader(**kwargs: Any) -> Any:
    return DataLoader([(torch.zeros(3), 0)], **kwargs)


def _datamodule(**kwargs: Any) -> SSLDataModule:
    return SSLDataModule(
        train_transform=lambda x: x, eval_transform=lambda x: x, batch_size=2, **kwargs
    )


# (recipe override, key path in the message, the same value through the Python API)
REFUSED = [
    (
        "stages.1.knn.k=0",
        "stages[1].knn.k",
        lambda: KNNMonitor(_loader(), _loader(), k=0),
    ),
    (
        "stages.1.knn.temperature=0.0",
        "stages[1].knn.temperature",
        lambda: KNNMonitor(_loader(), _loader(), temperature=0.0),
    ),
    (
        "stages.1.gradient_conflict={window: 0}",
        "stages[1].gradient_conflict.window",
        lambda: GradientConflictMonitor(window=0),
    ),
    (
        "stages.1.graft={from: previous, freeze_epochs: -1}",
        "stages[1].graft.freeze_epochs",
        lambda: Grafting("x.pt", "timm", freeze_epochs=-1),
    ),
    (
        "stages.1.anchor.num_blocks=-1",
        "stages[1].anchor.num_blocks",
        lambda: Grafting("x.pt", "timm", anchor_blocks=-1),
    ),
    (
        "stages.1.anchor.p=3",
        "stages[1].anchor.p",
        lambda: Grafting("x.pt", "timm", anchor_p=3),
    ),
    (
        "data.knn_bank_size=0",
        "data.knn_bank_size",
        lambda: _datamodule(knn_bank_size=0),
    ),
    (
        "data.holdout_fraction=1.0",
        "data.holdout_fraction",
        lambda: _datamodule(holdout_fraction=1.0),
    ),
    ("data.num_workers=-1", "data.num_workers", lambda: _datamodule(num_workers=-1)),
]


@pytest.mark.parametrize(("override", "path", "python_api"), REFUSED)
def test_library_constraint__refused_by_the_recipe_and_the_python_api(
    recipe_file: Path, override: str, path: str, python_api: Any
) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, [override])
    assert f"{path}: got " in str(info.value)
    with pytest.raises((GraftError, ValueError)):
        python_api()


def test_knn_every_n_epochs__zero_turns_the_monitor_off(recipe_file: Path) -> None:
    # The recipe's own meaning: KNNMonitor itself needs a period >= 1.
    recipe = load_recipe(recipe_file, ["stages.1.knn.every_n_epochs=0"])
    assert recipe.stages[1].knn.every_n_epochs == 0
    with pytest.raises(GraftError, match="every_n_epochs must be >= 1"):
        KNNMonitor(_loader(), _loader(), every_n_epochs=0)
