"""``load_recipe``: YAML file + overrides -> a validated, frozen :class:`Recipe`.

Read the YAML, expand shorthands (``data: DIR``, ``graft: previous``,
``backbone: NAME``), apply ``--set KEY=VALUE`` overrides, validate with
pydantic, then check the methods against the zoo and the backbone against timm.
An override's ``KEY`` is a dotted path into the YAML tree (list items by index,
stages also by name: ``stages.moco.epochs``), its ``VALUE`` is parsed as YAML:
it is checked like a value in the file. A problem is a :class:`RecipeError`
naming the file, the key path, the value and the options (and the ``--set`` that
set it, if one did).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lightly_graft.errors import RecipeError, did_you_mean
from lightly_graft.files import write_atomic
from lightly_graft.recipes.backbone_check import check_backbone
from lightly_graft.recipes.methods import check_methods
from lightly_graft.recipes.schema import Recipe
from lightly_graft.recipes.validation import (
    Invalid,
    as_lists,
    as_tuples,
    first_problem,
    join,
)
from lightly_graft.recipes.yaml_io import dump_yaml, parse_yaml, read_yaml

RESOLVED_HEADER = (
    "Resolved recipe written by `lightly-graft train` (overrides applied, auto\n"
    "values and the methods' defaults filled in; derived.from_library lists the\n"
    "values the recipe left out). Load it with lightly_graft.load_recipe or run it\n"
    "again with `lightly-graft train THIS_FILE`; the 'derived' section is\n"
    "informative (recomputed on every run)."
)


def _index(container: list, segment: str, path: str, text: str) -> int:
    if segment.lstrip("-").isdigit():
        index = int(segment)
        if -len(container) <= index < len(container):
            return index % len(container)
        raise RecipeError(
            f"--set '{text}': {path} has {len(container)} entries; index {index} "
            "is out of range"
        )
    names = [s.get("name") for s in container if isinstance(s, dict)]
    if path == "stages" and segment in names:
        return names.index(segment)
    raise RecipeError(
        f"--set '{text}': '{segment}' does not pick an entry of {path}: use an index "
        f"0..{len(container) - 1}"
        + (
            " or a stage name" + did_you_mean(segment, map(str, names))
            if path == "stages"
            else ""
        )
    )


def apply_override(tree: MutableMapping[str, Any], text: str) -> str:
    """Applies one ``KEY=VALUE`` override in place; returns the key path set."""
    key_text, sep, value_text = text.partition("=")
    segments = key_text.strip().split(".")
    if not sep or not all(segments):
        raise RecipeError(
            f"--set '{text}': expected KEY=VALUE with a dotted KEY, e.g. "
            "--set stages.1.epochs=5"
        )
    value = parse_yaml(value_text, source=f"--set '{text}'")
    node: Any = tree
    path = ""
    for segment in segments:  # down to the last key, adding missing mappings
        if isinstance(node, list):
            key: str | int = _index(node, segment, path, text)
        elif isinstance(node, MutableMapping):
            key = segment
            if node.get(key) is None:
                node[key] = {}
        else:
            raise RecipeError(
                f"--set '{text}': {path} is a value ({node!r}), not a mapping or a "
                f"list, so it has no key '{segment}'"
            )
        parent, node, path = node, node[key], join(path, key)
    parent[key] = value
    return path


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


def _related(path: str, key: str) -> bool:
    """Whether one key path lies inside the other (or they are equal)."""
    inner, outer = (path, key) if len(path) >= len(key) else (key, path)
    return inner == outer or inner.startswith((outer + ".", outer + "[")) or not outer


def _located(error: Invalid, source: str, overridden: dict[str, str]) -> RecipeError:
    sets = [text for key, text in overridden.items() if _related(error.path, key)]
    note = f" (set by --set {sets[0]})" if sets else ""
    where = f"{error.path}: " if error.path else ""
    return RecipeError(f"{source}: {where}{error.message}{note}")


def recipe_from_tree(
    tree: Any, *, source: str, overrides: Iterable[str] = ()
) -> Recipe:
    """Validates a raw YAML tree (modified in place by shorthands and overrides)
    into a :class:`Recipe`; ``source`` names it in errors ("recipe 'x.yaml'")."""
    if not isinstance(tree, dict):
        raise RecipeError(
            f"{source}: expected a mapping with name, backbone, stages, ...; got "
            f"{type(tree).__name__}"
        )
    _expand_shorthands(tree)
    overridden = {apply_override(tree, text): text for text in overrides}
    _expand_shorthands(tree)
    try:
        try:
            recipe = Recipe.model_validate(as_tuples(tree))
        except ValidationError as error:
            raise first_problem(error, Recipe) from None
        check_methods(recipe)
        check_backbone(recipe)
    except Invalid as error:
        raise _located(error, source, overridden) from None
    return recipe


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Loads and validates a recipe file, with ``KEY=VALUE`` overrides (e.g.
    ``stages.1.epochs=5``) applied first. The recipe is as written: auto values
    are None and left-out keys unset until ``resolve_recipe``. Raises
    ``RecipeError``."""
    source = f"recipe '{path}'"
    return recipe_from_tree(read_yaml(path), source=source, overrides=overrides)


def to_plain(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-able data (keys as in YAML, lists for tuples);
    an optimizer section shows the keys it sets (a resolved one: all)."""
    plain: dict[str, Any] = as_lists(recipe.model_dump(by_alias=True))
    for stage, section in zip(recipe.stages, plain["stages"], strict=True):
        section["optimizer"] = as_lists(stage.optimizer.model_dump(exclude_unset=True))
    return plain


def recipe_to_yaml(recipe: Recipe, *, derived: dict[str, Any] | None = None) -> str:
    """The recipe as YAML text (with a ``derived`` section if given)."""
    plain = to_plain(recipe)
    plain["derived"] = as_lists(derived) if derived is not None else plain["derived"]
    if plain["derived"] is None:
        del plain["derived"]
    return dump_yaml(plain, header=RESOLVED_HEADER)


def save_recipe(
    recipe: Recipe, path: str | Path, *, derived: dict[str, Any] | None = None
) -> Path:
    """Writes the recipe as YAML to ``path``; returns the path."""
    return write_atomic(path, recipe_to_yaml(recipe, derived=derived))
