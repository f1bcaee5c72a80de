from __future__ import annotations

from pathlib import Path

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe
from lightly_graft.recipes.inputs import check_inputs


def _check(recipe_file: Path, *overrides: str) -> str:
    recipe = load_recipe(recipe_file, overrides)
    with pytest.raises(RecipeError) as info:
        check_inputs(recipe, source=f"recipe '{recipe_file}'")
    return str(info.value)


def test_inputs__folder_with_classes_passes(recipe_file: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "a").mkdir(parents=True)
    check_inputs(load_recipe(recipe_file, [f"data={tmp_path / 'data'}"]), source="r")


def test_inputs__missing_data_path(recipe_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "imagenet"
    message = _check(recipe_file, f"data.path={missing}")
    assert f"data.path: '{missing}' does not exist" in message


def test_inputs__unset_data_path_says_how_to_set_it(recipe_file: Path) -> None:
    assert "--set data.path=DIR" in _check(recipe_file, "data.path=null")


def test_inputs__folder_without_classes(recipe_file: Path, tmp_path: Path) -> None:
    assert "has no class folders" in _check(recipe_file, f"data={tmp_path}")


def test_inputs__missing_graft_checkpoint(recipe_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "mae.pth"
    message = _check(
        recipe_file, f"stages.1.graft={{checkpoint: {missing}, format: mae}}"
    )
    assert f"stages[1].graft.checkpoint: '{missing}' does not exist" in message


def test_inputs__empty_graft_checkpoint(recipe_file: Path, tmp_path: Path) -> None:
    (tmp_path / "mae.pth").touch()
    message = _check(
        recipe_file,
        f"stages.1.graft={{checkpoint: {tmp_path / 'mae.pth'}, format: mae}}",
    )
    assert "is empty (0 bytes)" in message


def test_inputs__lists_every_problem(recipe_file: Path, tmp_path: Path) -> None:
    message = _check(
        recipe_file,
        f"data={tmp_path / 'no_data'}",
        f"stages.1.graft={{checkpoint: {tmp_path}, format: timm}}",
    )
    assert "data.path:" in message and "is a directory, not a checkpoint" in message
