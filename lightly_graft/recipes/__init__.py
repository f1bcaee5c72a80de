"""Recipes: YAML files -> strict, frozen pydantic models. Parsing and
validation only; running a recipe is :mod:`lightly_graft.run`.

``load_recipe(path, overrides=())`` validates a recipe strictly (unknown keys,
wrong types and out-of-range values are a ``RecipeError`` naming the file, the
key path and the valid options); ``resolve_recipe`` fills in the auto values
and every key left to the library (a stage's optimizer from its method's
``default_optimizer()``, its ``method_args`` from the constructor);
``save_recipe`` writes the resolved recipe beside a checkpoint. The models are
in :mod:`~lightly_graft.recipes.schema`; the reference is ``docs/recipes.md``.
"""

from __future__ import annotations

from lightly_graft.recipes.loader import (
    load_recipe,
    recipe_from_tree,
    recipe_to_yaml,
    save_recipe,
    to_plain,
)
from lightly_graft.recipes.methods import method_args, stage_optimizer
from lightly_graft.recipes.resolve import derived_values, from_library, resolve_recipe
from lightly_graft.recipes.schema import Recipe, StageConfig

__all__ = [
    "Recipe",
    "StageConfig",
    "derived_values",
    "from_library",
    "load_recipe",
    "method_args",
    "recipe_from_tree",
    "recipe_to_yaml",
    "resolve_recipe",
    "save_recipe",
    "stage_optimizer",
    "to_plain",
]
