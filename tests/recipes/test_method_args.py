from __future__ import annotations

from pathlib import Path

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe
from lightly_graft.recipes.resolve import resolve_recipe
from lightly_graft.run.build import train_transform


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stages.1.method_args.temprature=0.1", "has no argument 'temprature'"),
        ("stages.1.method_args.temperature=hot", "expected a number, got 'hot'"),
        (
            "stages.1.method_args.head_norm=bn",
            "valid options: 'batch', 'layer', 'none'",
        ),
        (
            "stages.1.method_args.backbone=vit_small_patch16_224",
            "is set by the recipe's `backbone`",
        ),
        (
            "stages.0.method_args.batch_size_per_device=3",
            "is set by the stage's `batch_size`",
        ),
    ],
)
def test_method_args__checked_against_the_zoo(
    recipe_file: Path, override: str, expected: str
) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, [override])
    assert expected in str(info.value)


def test_method_args__typo_suggests_the_argument(recipe_file: Path) -> None:
    with pytest.raises(RecipeError, match="did you mean 'temperature'"):
        load_recipe(recipe_file, ["stages.1.method_args.temprature=0.1"])


def test_train_transform__views_follow_the_method(recipe_file: Path) -> None:
    from PIL import Image

    recipe = resolve_recipe(load_recipe(recipe_file))
    image = Image.new("RGB", (28, 28))
    assert len(train_transform(recipe.data, "mae")(image)) == 1
    views = train_transform(recipe.data, "grafted_moco")(image)
    assert len(views) == 2 and views[0].shape == (3, 16, 16)


def test_train_transform__preset_reaches_masked_moco(recipe_file: Path) -> None:
    from lightly_graft.data.view_presets import (
        DiagonalCropTransform,
        SharedCropTransform,
    )

    recipe = resolve_recipe(load_recipe(recipe_file, ["data.augment.preset=medium"]))
    assert isinstance(
        train_transform(recipe.data, "masked_moco"), DiagonalCropTransform
    )
    default = resolve_recipe(load_recipe(recipe_file))
    # the exact class: DiagonalCropTransform ("medium") is a SharedCropTransform too
    assert type(train_transform(default.data, "masked_moco")) is SharedCropTransform


def test_train_transform__preset_without_presets_is_an_error(recipe_file: Path) -> None:
    recipe = resolve_recipe(load_recipe(recipe_file, ["data.augment.preset=light"]))
    with pytest.raises(
        RecipeError, match="'grafted_moco' has no view presets.*'masked_moco'"
    ):
        train_transform(recipe.data, "grafted_moco")


def test_augment_preset__unknown_value_lists_options(recipe_file: Path) -> None:
    with pytest.raises(RecipeError, match="'light'"):
        load_recipe(recipe_file, ["data.augment.preset=lite"])


def test_freeze_epochs_under_ddp__needs_find_unused_parameters(
    recipe_file: Path,
) -> None:
    overrides = ["stages.1.graft.freeze_epochs=1", "devices=2"]
    with pytest.raises(RecipeError, match="ddp_find_unused_parameters_true"):
        load_recipe(recipe_file, overrides)
    load_recipe(recipe_file, [*overrides, "strategy=ddp_find_unused_parameters_true"])


def test_batch_transform__twins_the_per_image_views(recipe_file: Path) -> None:
    """Batched by default: the same views per method and preset, made from a
    uint8 batch; ``batched: false`` keeps the per-image transforms only."""
    import torch

    from lightly_graft.data import batched_views
    from lightly_graft.run.build import batch_transform, build_datamodule

    recipe = resolve_recipe(load_recipe(recipe_file))
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    for method, count in (("mae", 1), ("grafted_moco", 2), ("mtl", 3)):
        views = batch_transform(recipe.data, method)
        assert views.num_views == count
        assert [v.shape for v in views(images)] == [(2, 3, 16, 16)] * count
    assert (
        type(batch_transform(recipe.data, "masked_moco"))
        is batched_views.SharedCropViews
    )
    medium = resolve_recipe(load_recipe(recipe_file, ["data.augment.preset=medium"]))
    assert isinstance(
        batch_transform(medium.data, "masked_moco"), batched_views.DiagonalCropViews
    )
    module = build_datamodule(recipe, recipe.stages[0])
    assert module.batch_transform is not None
    per_image = resolve_recipe(load_recipe(recipe_file, ["data.augment.batched=false"]))
    assert batch_transform(per_image.data, "grafted_moco") is None
    assert build_datamodule(per_image, per_image.stages[0]).batch_transform is None
