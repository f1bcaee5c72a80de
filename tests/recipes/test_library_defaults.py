"""A recipe section leaves out what it does not change and gets the library's
default: the optimizer of the method's ``default_optimizer()``, the
constructor's defaults; a value the recipe gives wins."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from graft_testing import TINY_BACKBONE

from lightly_graft import zoo
from lightly_graft.recipes import (
    from_library,
    load_recipe,
    method_args,
    resolve_recipe,
    stage_optimizer,
)
from lightly_graft.recipes.methods import SET_BY_RECIPE

# 16 patches of 8 px, 3 blocks: every method's defaults fit (Masked MoCo's 8
# chunks of 2 patches, GraftedMoCo's 3 stages of 1 block).
RECIPE = """\
name: defaults
backbone: {{name: vit_tiny_patch16_224, img_size: 32, patch_size: 8, embed_dim: 32,
           depth: 3, num_heads: 2}}
stages:
  - name: only
    method: {method}
    epochs: 1
    batch_size: 8
{extra}"""


def _recipe(tmp_path: Path, method: str, extra: str = "") -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(method=method, extra=extra))
    return path


def _constructor_defaults(cls: type) -> dict[str, object]:
    """What the constructor called with nothing but the required arguments
    stores as its hyperparameters (Lightning reads them from the frames of
    every ``__init__`` in the hierarchy, not from the signatures)."""
    with torch.device("meta"):
        method = cls(batch_size_per_device=8, num_classes=0, backbone=TINY_BACKBONE)
    return {k: v for k, v in method.hparams.items() if k not in SET_BY_RECIPE}


@pytest.mark.parametrize("name", zoo.names())
def test_stage_without_optimizer__gets_the_methods_defaults(
    name: str, tmp_path: Path
) -> None:
    cls = zoo.get(name).cls
    recipe = resolve_recipe(load_recipe(_recipe(tmp_path, name)))
    (stage,) = recipe.stages
    assert stage_optimizer(stage) == cls.default_optimizer()
    assert method_args(stage) == _constructor_defaults(cls)
    assert stage.method_args == _constructor_defaults(cls)  # shown when resolved


@pytest.mark.parametrize("name", zoo.names())
def test_given_value__wins_over_the_methods_default(name: str, tmp_path: Path) -> None:
    cls = zoo.get(name).cls
    default = cls.default_optimizer()
    extra = (
        "    optimizer: {weight_decay: 0.321, betas: [0.8, 0.9]}\n"
        "    method_args: {projection_dim: 24}\n"
        if "projection_dim" in _constructor_defaults(cls)
        else "    optimizer: {weight_decay: 0.321, betas: [0.8, 0.9]}\n"
    )
    loaded = load_recipe(_recipe(tmp_path, name, extra))
    (stage,) = resolve_recipe(loaded).stages
    expected = dataclasses.replace(default, weight_decay=0.321, betas=(0.8, 0.9))
    assert stage_optimizer(stage) == expected
    if "projection_dim" in _constructor_defaults(cls):
        assert stage.method_args["projection_dim"] == 24
    sources = from_library(loaded)["stages[0].optimizer"]
    assert sources["from"] == f"{cls.__name__}.default_optimizer()"
    assert "weight_decay" not in sources["keys"] and "warmup_epochs" in sources["keys"]


def test_base_lr_replaces_the_default_stage_lrs(tmp_path: Path) -> None:
    # GraftedMoCo's default has stage LRs; a recipe's base_lr means one LR.
    path = _recipe(tmp_path, "grafted_moco", "    optimizer: {base_lr: 1.0e-3}\n")
    optimizer = stage_optimizer(load_recipe(path).stages[0])
    assert optimizer.stage_lrs is None and optimizer.base_lr == 1e-3
    assert optimizer.weight_decay == 0.1 and optimizer.warmup_epochs == 40


def test_grafted_moco_recipe__trains_with_moco_v3_values(tmp_path: Path) -> None:
    # The issue's example: only stage_lrs given -> MoCo v3's betas, wd, warmup.
    path = _recipe(
        tmp_path,
        "grafted_moco",
        "    optimizer: {stage_lrs: [1.5e-5, 1.5e-5, 1.5e-4]}\n",
    )
    optimizer = stage_optimizer(load_recipe(path).stages[0])
    assert optimizer.betas == (0.9, 0.999) and optimizer.weight_decay == 0.1
    assert optimizer.warmup_epochs == 40


def test_resolved_recipe__reloads_to_the_same_values(tmp_path: Path) -> None:
    from lightly_graft.recipes import save_recipe

    recipe = resolve_recipe(load_recipe(_recipe(tmp_path, "grafted_moco")))
    saved = save_recipe(recipe, tmp_path / "saved.yaml")
    again = resolve_recipe(load_recipe(saved))
    assert again == recipe
    assert from_library(load_recipe(saved)).get("stages[0].optimizer") is None
