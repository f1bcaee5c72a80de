from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe, to_plain


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        out = {}
        for i, value in enumerate(tree):
            out.update(_leaves(value, f"{prefix}[{i}]"))
        return out
    return {prefix: tree}


def _changed(recipe_file: Path, *overrides: str) -> dict[str, tuple[Any, Any]]:
    before = _leaves(to_plain(load_recipe(recipe_file)))
    after = _leaves(to_plain(load_recipe(recipe_file, overrides)))
    assert before.keys() == after.keys()
    return {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def test_override__changes_exactly_the_named_value(recipe_file: Path) -> None:
    assert _changed(recipe_file, "stages.1.epochs=5") == {"stages[1].epochs": (2, 5)}


def test_override__by_stage_name_and_yaml_values(recipe_file: Path) -> None:
    changed = _changed(
        recipe_file,
        "stages.cl.optimizer.stage_lrs=[1e-6, 1e-6, 1e-3]",
        "stages.mim.limit_train_batches=2",
        "data.knn_bank_size=null",
    )
    assert changed == {
        "stages[1].optimizer.stage_lrs": ([1.5e-5, 1.5e-5, 1.5e-4], [1e-6, 1e-6, 1e-3]),
        "stages[0].limit_train_batches": (None, 2),
        "data.knn_bank_size": (10_000, None),
    }


def test_override__data_shorthand_and_backbone_kwargs(recipe_file: Path) -> None:
    changed = _changed(recipe_file, "data.path=/data/x", "backbone.embed_dim=64")
    assert changed == {
        "data.path": ("default", "/data/x"),
        "backbone.embed_dim": (32, 64),
    }


def test_override__later_wins(recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file, ["seed=3", "seed=4"])
    assert recipe.seed == 4


def test_override__unknown_key_names_it_and_the_override(recipe_file: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, ["stages.1.epochz=5"])
    message = str(info.value)
    assert "stages[1].epochz: unknown key" in message
    assert "did you mean 'epochs'?" in message
    assert "(set by --set stages.1.epochz=5)" in message


def test_override__value_validated_like_the_file(recipe_file: Path) -> None:
    with pytest.raises(RecipeError, match=r"stages\[0\].epochs: got -1 .*must be >= 1"):
        load_recipe(recipe_file, ["stages.0.epochs=-1"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stages.7.epochs=1", "stages has 2 entries; index 7 is out of range"),
        ("stages.clx.epochs=1", "did you mean 'cl'?"),
        ("name.first=x", "name is a value ('tiny'), not a mapping"),
        ("epochs", "expected KEY=VALUE"),
        ("stages..epochs=1", "expected KEY=VALUE"),
        ("seed=[1", "is not valid YAML"),
    ],
)
def test_override__malformed(recipe_file: Path, override: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, [override])
    assert expected in str(info.value)
