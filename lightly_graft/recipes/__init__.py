"""Recipes: YAML files -> frozen, typed dataclasses -> the training pipeline.

``load_recipe(path, overrides=())`` validates a recipe strictly (unknown keys,
wrong types and out-of-range values are a ``RecipeError`` naming the file, the
key path and the valid options); ``resolve_recipe`` fills in the auto values;
``save_recipe`` writes the resolved recipe beside a checkpoint. The format
reference is ``docs/recipes.md``.
"""

from __future__ import annotations

from lightly_graft.recipes.loader import (
    load_recipe,
    recipe_from_tree,
    recipe_to_yaml,
    save_recipe,
)
from lightly_graft.recipes.schema import (
    AnchorConfig,
    Augment,
    BackboneConfig,
    DataConfig,
    GraftConfig,
    KNNConfig,
    Normalize,
    OptimizerConfig,
    Recipe,
    StageConfig,
)

__all__ = [
    "AnchorConfig",
    "Augment",
    "BackboneConfig",
    "DataConfig",
    "GraftConfig",
    "KNNConfig",
    "Normalize",
    "OptimizerConfig",
    "Recipe",
    "StageConfig",
    "load_recipe",
    "recipe_from_tree",
    "recipe_to_yaml",
    "save_recipe",
]
