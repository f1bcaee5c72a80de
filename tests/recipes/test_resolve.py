from __future__ import annotations

from pathlib import Path

from lightly_graft.recipes import load_recipe, save_recipe
from lightly_graft.recipes.resolve import resolve_recipe


def test_resolve__fills_auto_values(recipe_file: Path) -> None:
    recipe = resolve_recipe(load_recipe(recipe_file))
    assert recipe.data.image_size == 16
    assert recipe.data.normalize is not None
    assert recipe.data.normalize.mean == (0.286, 0.286, 0.286)  # Fashion-MNIST's
    assert recipe.data.augment.blur_probs == (0.0, 0.0)  # small images: no blur
    assert recipe.data.augment.min_scale == 0.2


def test_resolve__keeps_given_values_and_is_idempotent(recipe_file: Path) -> None:
    recipe = resolve_recipe(
        load_recipe(recipe_file, ["data.augment.blur_probs=[0.5, 0.1]"])
    )
    assert recipe.data.augment.blur_probs == (0.5, 0.1)
    assert resolve_recipe(recipe) == recipe


def test_resolve__saved_resolved_recipe_reloads_equal(
    recipe_file: Path, tmp_path: Path
) -> None:
    recipe = resolve_recipe(load_recipe(recipe_file, ["stages.1.epochs=7"]))
    path = save_recipe(recipe, tmp_path / "run" / "recipe.yaml", derived={"x": [1, 2]})
    assert "derived:" in path.read_text()
    reloaded = load_recipe(path)
    assert reloaded.derived == {"x": [1, 2]}
    assert reloaded.__class__(**{**reloaded.__dict__, "derived": None}) == recipe
