"""``load_recipe``: YAML file + overrides -> a validated, frozen :class:`Recipe`.

Steps: read the YAML (``yaml_io``), expand shorthands (``data: DIR``,
``graft: previous``, ``backbone: NAME``), apply ``--set`` overrides, nest the
flat backbone mapping into ``name`` + ``kwargs``, build the dataclasses strictly
(``typed.build``), check ``method``/``method_args`` against the zoo
(``methods``) and the backbone against timm (``backbone_check``).
Every problem is a :class:`RecipeError` naming the file, the key path, the
value given and the valid options (and the ``--set`` that set it, if one did).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

from lightly_graft.errors import RecipeError
from lightly_graft.recipes.backbone_check import check_backbone
from lightly_graft.recipes.methods import check_methods
from lightly_graft.recipes.overrides import apply_overrides
from lightly_graft.recipes.schema import Recipe
from lightly_graft.recipes.typed import Invalid, build, to_plain
from lightly_graft.recipes.yaml_io import dump_yaml, read_yaml

RESOLVED_HEADER = (
    "Resolved recipe written by `lightly-graft train` (overrides applied, auto\n"
    "values filled in). Load it with lightly_graft.load_recipe or run it again\n"
    "with `lightly-graft train THIS_FILE`; the 'derived' section is informative\n"
    "(recomputed on every run)."
)


def _expand_shorthands(tree: MutableMapping[str, Any]) -> None:
    if isinstance(tree.get("data"), str):
        tree["data"] = {"path": tree["data"]}
    if isinstance(tree.get("backbone"), str):
        tree["backbone"] = {"name": tree["backbone"]}
    stages = tree.get("stages")
    if isinstance(stages, list):
        for stage in stages:
            if isinstance(stage, dict) and isinstance(stage.get("graft"), str):
                stage["graft"] = {"from": stage["graft"]}


def _nest_backbone(tree: MutableMapping[str, Any]) -> None:
    backbone = tree.get("backbone")
    if isinstance(backbone, dict) and set(backbone) - {"name"}:
        kwargs = {k: v for k, v in backbone.items() if k != "name"}
        tree["backbone"] = {"name": backbone.get("name"), "kwargs": kwargs}
        if "name" not in backbone:
            del tree["backbone"]["name"]


def _related(path: str, key: str) -> bool:
    """Whether one key path lies inside the other (or they are equal)."""
    inner, outer = (path, key) if len(path) >= len(key) else (key, path)
    return inner == outer or inner.startswith((outer + ".", outer + "[")) or not outer


def _located(error: Invalid, source: str, overridden: dict[str, str]) -> RecipeError:
    path = error.path.replace("backbone.kwargs.", "backbone.")
    note = next(
        (
            f" (set by --set {text})"
            for key, text in overridden.items()
            if _related(path, key)
        ),
        "",
    )
    where = f"{path}: " if path else ""
    return RecipeError(f"{source}: {where}{error.message}{note}")


def recipe_from_tree(
    tree: Any, *, source: str, overrides: Iterable[str] = ()
) -> Recipe:
    """Validates a raw YAML tree (a mapping) into a :class:`Recipe`.

    Args:
        tree: The parsed YAML; modified in place by shorthands and overrides.
        source: Names the origin in errors, e.g. "recipe 'recipes/x.yaml'".
        overrides: ``KEY=VALUE`` strings (see :mod:`~lightly_graft.recipes.overrides`).
    """
    if not isinstance(tree, dict):
        raise RecipeError(
            f"{source}: expected a mapping with name, backbone, stages, ...; got "
            f"{type(tree).__name__}"
        )
    _expand_shorthands(tree)
    overridden = apply_overrides(tree, overrides)
    _expand_shorthands(tree)
    _nest_backbone(tree)
    try:
        recipe = build(Recipe, tree)
        check_methods(recipe)
        check_backbone(recipe)
    except Invalid as error:
        raise _located(error, source, overridden) from None
    return recipe


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Loads and validates a recipe file.

    Args:
        path: The YAML file.
        overrides: ``KEY=VALUE`` strings applied before validation, e.g.
            ``["stages.1.epochs=5", "data.path=/data/imagenet"]``.

    Returns:
        The frozen recipe; auto values are still None (see ``resolve_recipe``).

    Raises:
        RecipeError: The file is missing or invalid; the message names the file,
            the key path, the value given and the valid options.
    """
    source = f"recipe '{path}'"
    return recipe_from_tree(read_yaml(path), source=source, overrides=overrides)


def recipe_to_yaml(recipe: Recipe, *, derived: dict[str, Any] | None = None) -> str:
    """The recipe as YAML text (with a ``derived`` section if given)."""
    plain = to_plain(recipe)
    plain["derived"] = to_plain(derived) if derived is not None else plain["derived"]
    if plain["derived"] is None:
        del plain["derived"]
    return dump_yaml(plain, header=RESOLVED_HEADER)


def save_recipe(
    recipe: Recipe, path: str | Path, *, derived: dict[str, Any] | None = None
) -> Path:
    """Writes the recipe as YAML to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_to_yaml(recipe, derived=derived), encoding="utf-8")
    return path
