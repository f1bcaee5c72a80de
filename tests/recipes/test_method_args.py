from __future__ import annotations

from pathlib import Path

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe
from lightly_graft.recipes.build import train_transform
from lightly_graft.recipes.resolve import resolve_recipe


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
