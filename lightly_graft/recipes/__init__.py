"""Recipes: YAML files -> strict, frozen pydantic models (``load_recipe``,
:mod:`~lightly_graft.recipes.loader`), their auto values and library defaults
filled in (``resolve_recipe``). Parsing and validation only; running a recipe is
:mod:`lightly_graft.run`. Reference: ``docs/recipes.md``.
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
