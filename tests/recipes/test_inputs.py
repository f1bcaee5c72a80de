from __future__ import annotations

from pathlib import Path

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe
from lightly_graft.run.checks import check_inputs


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


def _deeper_checkpoint(recipe_file: Path, path: Path) -> Path:
    """A timm state dict of the recipe's ViT with one block more."""
    import torch

    from lightly_graft.modules.backbone import BackboneSpec, build_vit
    from lightly_graft.run.build import backbone_spec

    spec = backbone_spec(load_recipe(recipe_file))
    deeper = BackboneSpec(spec.name, {**spec.kwargs, "depth": spec.kwargs["depth"] + 1})
    torch.save(build_vit(deeper).state_dict(), path)
    return path


def test_graft_checkpoint__unexpected_keys_refused_before_training(
    recipe_file: Path, tmp_path: Path
) -> None:
    # Grafting refuses keys the backbone lacks; the up-front check must too,
    # or the run would fail only after the earlier stages trained.
    from lightly_graft.errors import CheckpointError
    from lightly_graft.run.checks import check_graft_checkpoints

    path = _deeper_checkpoint(recipe_file, tmp_path / "deeper.pth")
    graft = f"stages.1.graft={{checkpoint: {path}, format: timm}}"
    with pytest.raises(CheckpointError, match=r"unexpected.*blocks\.3\."):
        check_graft_checkpoints(load_recipe(recipe_file, [graft]), source="r")
    partial = (
        f"stages.1.graft={{checkpoint: {path}, format: timm, allow_partial: true}}"
    )
    check_graft_checkpoints(load_recipe(recipe_file, [partial]), source="r")
