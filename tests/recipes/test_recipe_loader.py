from __future__ import annotations

from pathlib import Path

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe, recipe_to_yaml, to_plain


def _edit(recipe_file: Path, old: str, new: str) -> Path:
    text = recipe_file.read_text()
    assert old in text, old
    recipe_file.write_text(text.replace(old, new, 1))
    return recipe_file


def _error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load__tiny_recipe_with_defaults(recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file)
    assert recipe.name == "tiny" and recipe.seed == 1
    assert recipe.data.path == "default" and recipe.data.image_size is None
    assert recipe.backbone.name == "vit_tiny_patch16_224"
    assert recipe.backbone.kwargs["depth"] == 3
    mim, cl = recipe.stages
    assert mim.optimizer.base_lr == 1.5e-4 and mim.optimizer.betas == (0.9, 0.95)
    assert cl.graft is not None and cl.graft.from_ == "previous"
    assert cl.optimizer.stage_lrs == (1.5e-5, 1.5e-5, 1.5e-4)
    assert cl.knn.k == 200 and cl.anchor.weight == 0.0


def test_load__exponent_without_dot_is_a_float(recipe_file: Path) -> None:
    # PyYAML alone reads `1e-5` as the string "1e-5" (YAML 1.1 wants a dot).
    _edit(
        recipe_file,
        "stage_lrs: [1.5e-5, 1.5e-5, 1.5e-4]",
        "stage_lrs: [1e-5, 1e-5, 1e-4]",
    )
    assert load_recipe(recipe_file).stages[1].optimizer.stage_lrs == (1e-5, 1e-5, 1e-4)


def test_load__resolved_yaml_round_trips(recipe_file: Path, tmp_path: Path) -> None:
    recipe = load_recipe(recipe_file)
    saved = tmp_path / "saved.yaml"
    saved.write_text(recipe_to_yaml(recipe))
    assert load_recipe(saved) == recipe
    assert to_plain(load_recipe(saved)) == to_plain(recipe)


def test_error__unknown_key_names_file_path_and_suggestion(recipe_file: Path) -> None:
    _edit(recipe_file, "      weight_decay: 0.1", "      wieght_decay: 0.1")
    message = _error(recipe_file)
    assert str(recipe_file) in message
    assert "stages[1].optimizer.wieght_decay: unknown key" in message
    assert "did you mean 'weight_decay'?" in message
    assert "'stage_lrs'" in message  # lists the valid keys


def test_error__wrong_type(recipe_file: Path) -> None:
    _edit(recipe_file, "epochs: 2", "epochs: two")
    message = _error(recipe_file)
    assert "stages[1].epochs: expected an integer, got 'two' (string)" in message


def test_error__bool_is_not_an_int(recipe_file: Path) -> None:
    _edit(recipe_file, "seed: 1", "seed: yes")
    assert "seed: expected an integer, got True (boolean)" in _error(recipe_file)


def test_error__out_of_range_value(recipe_file: Path) -> None:
    _edit(recipe_file, "batch_size: 8", "batch_size: 0")
    assert "stages[0].batch_size: got 0 (integer): must be >= 1" in _error(recipe_file)


def test_error__bad_choice_lists_options(recipe_file: Path) -> None:
    _edit(recipe_file, "optimizer: {base_lr", "optimizer: {name: adam, base_lr")
    message = _error(recipe_file)
    assert "stages[0].optimizer.name: got 'adam' (string)" in message
    assert "valid options: 'adamw', 'lars', 'sgd' (did you mean 'adamw'?)" in message


def test_error__stage_lrs_must_match_num_stages(recipe_file: Path) -> None:
    _edit(recipe_file, "[1.5e-5, 1.5e-5, 1.5e-4]", "[1.5e-5, 1.5e-4]")
    message = _error(recipe_file)
    assert "stages[1].optimizer.stage_lrs: has 2 values but num_stages is 3" in message


def test_error__base_lr_and_stage_lrs_exclusive(recipe_file: Path) -> None:
    _edit(recipe_file, "      weight_decay: 0.1", "      base_lr: 0.1")
    assert "give exactly one of base_lr and stage_lrs (got both)" in _error(recipe_file)


def test_error__missing_required_key(recipe_file: Path) -> None:
    _edit(recipe_file, "    epochs: 1\n", "")
    assert "stages[0].epochs: missing; it is required" in _error(recipe_file)


def test_error__first_stage_cannot_graft_previous(recipe_file: Path) -> None:
    _edit(recipe_file, "    method: mae\n", "    method: mae\n    graft: previous\n")
    assert "stages[0].graft.from: the first stage has no previous" in _error(
        recipe_file
    )


def test_error__checkpoint_needs_a_format(recipe_file: Path) -> None:
    _edit(recipe_file, "graft: previous", "graft: {checkpoint: mae.pth}")
    assert "stages[1].graft.format: is required with 'checkpoint'" in _error(
        recipe_file
    )


def test_error__anchor_without_graft(recipe_file: Path) -> None:
    _edit(
        recipe_file, "    method: mae\n", "    method: mae\n    anchor: {weight: 0.1}\n"
    )
    assert "stages[0].anchor.weight: an anchor needs grafted" in _error(recipe_file)


def test_error__duplicate_stage_names(recipe_file: Path) -> None:
    _edit(recipe_file, "name: cl", "name: mim")
    assert "stages[1].name: 'mim' is used by an earlier stage" in _error(recipe_file)


def test_error__duplicate_yaml_key(recipe_file: Path) -> None:
    _edit(recipe_file, "seed: 1\n", "seed: 1\nseed: 2\n")
    message = _error(recipe_file)
    assert "is not valid YAML" in message and "duplicate key 'seed'" in message


def test_error__yaml_syntax(recipe_file: Path) -> None:
    _edit(recipe_file, "optimizer: {base_lr: 1.5e-4,", "optimizer: {base_lr: [1.5e-4,")
    assert f"recipe '{recipe_file}' is not valid YAML" in _error(recipe_file)


def test_error__missing_recipe_file(tmp_path: Path) -> None:
    assert f"recipe '{tmp_path / 'nope.yaml'}' is missing" in _error(
        tmp_path / "nope.yaml"
    )


def test_error__not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "expected a mapping with name, backbone, stages" in _error(
        tmp_path / "list.yaml"
    )


def test_error__unknown_timm_model_is_suggested(recipe_file: Path) -> None:
    _edit(recipe_file, "vit_tiny_patch16_224", "vit_tiny_patch16_22")
    message = _error(recipe_file)
    assert "backbone.name: 'vit_tiny_patch16_22' is not a timm model" in message
    assert "did you mean 'vit_tiny_patch16_224'?" in message


def test_error__unknown_timm_kwarg_is_suggested(recipe_file: Path) -> None:
    _edit(recipe_file, "  img_size: 16", "  imgsize: 16")
    message = _error(recipe_file)
    assert "backbone.imgsize: is not a keyword argument" in message
    assert "did you mean 'img_size'?" in message


def test_error__blocks_must_split_into_stages(recipe_file: Path) -> None:
    _edit(recipe_file, "depth: 3", "depth: 4")
    message = _error(recipe_file)
    assert (
        "stages[0].optimizer.num_stages: is 3, but the backbone's 4 blocks" in message
    )


def test_error__image_size_must_match_backbone(recipe_file: Path) -> None:
    _edit(recipe_file, "data: default", "data: {path: default, image_size: 32}")
    message = _error(recipe_file)
    assert "data.image_size: is 32 but the backbone's img_size is 16" in message


def test_error__unknown_analysis_kind_lists_options(recipe_file: Path) -> None:
    with pytest.raises(RecipeError, match=r"analysis.*'tnse'.*'tsne'"):
        load_recipe(recipe_file, ["analysis=[vic, tnse]"])
    assert load_recipe(recipe_file, ["analysis=[]"]).analysis == ()
