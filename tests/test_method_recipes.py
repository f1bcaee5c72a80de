"""The grafting ablations with frozen stages keep the grafted weights.

MIM->CL grafting (Table 1, lower stages frozen) and CL->MIM: each stage is built
from the zoo with the recipe's ``method_args`` (sizes shrunk to the tiny test
model), its optimizer section and its ``graft`` section, fit for two steps on
random views, and the frozen stages must still hold the previous stage's weights.
(Every shipped recipe also runs through the pipeline in
``tests/recipes/test_shipped_recipes.py``.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from graft_testing import TINY_BACKBONE, TINY_METHOD_ARGS, fit_tiny

from lightly_graft import Grafting, zoo
from lightly_graft.training.optimizer import GraftedStageOptimizer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FROZEN_STAGE_RECIPES = ["grafted_frozen.yaml", "cl_to_mim.yaml"]
SIZE_ARGS = {"num_chunks"}  # the tiny ViT has 16 patches: keep the recipe's n
OPTIMIZER_FIELDS = {f.name for f in dataclasses.fields(GraftedStageOptimizer)}


def _tiny_args(method: str, recipe_args: dict) -> dict:
    tiny = {k: v for k, v in TINY_METHOD_ARGS[method].items() if k not in SIZE_ARGS}
    return {**recipe_args, **tiny}


def _optimizer(section: dict) -> dict:
    return {k: v for k, v in section.items() if k in OPTIMIZER_FIELDS}


@pytest.mark.slow
@pytest.mark.parametrize("file", FROZEN_STAGE_RECIPES)
def test_recipe__stages_run_and_graft(file: str, tmp_path: Path) -> None:
    recipe = yaml.safe_load((RECIPES / file).read_text())
    previous: Path | None = None
    for stage in recipe["stages"]:
        torch.manual_seed(0)
        entry = zoo.get(stage["method"])
        method = entry.cls(
            batch_size_per_device=8,
            num_classes=4,
            backbone=dict(TINY_BACKBONE),
            optimizer=_optimizer(stage["optimizer"]),
            **_tiny_args(stage["method"], stage.get("method_args", {})),
        )
        callbacks = []
        graft = stage.get("graft")
        if graft is not None:
            assert previous is not None
            num_blocks = graft.get("num_blocks") if isinstance(graft, dict) else None
            callbacks.append(Grafting(previous, "lightning", num_blocks=num_blocks))
        trainer = fit_tiny(
            method, num_views=method.num_views, max_steps=2, callbacks=callbacks
        )
        assert trainer.global_step == 2
        frozen = stage["optimizer"].get("frozen_stages")
        if frozen and previous is not None:
            _check_frozen_stages_kept_grafted_weights(method, previous, frozen)
        previous = tmp_path / f"{stage['name']}.ckpt"
        trainer.save_checkpoint(previous)


def _check_frozen_stages_kept_grafted_weights(method, checkpoint, frozen) -> None:
    """MIM->CL / CL->MIM grafting: the frozen lower stages still hold the
    previous stage's weights after training; the top stage moved."""
    source = torch.load(checkpoint, weights_only=True)["state_dict"]
    depth = len(method.backbone.vit.blocks)
    per_stage = depth // 3
    for i in range(depth):
        name = f"backbone.vit.blocks.{i}.mlp.fc1.weight"
        now = method.state_dict()[name]
        if i // per_stage in frozen:
            torch.testing.assert_close(now, source[name], rtol=0, atol=0)
        else:
            assert not torch.equal(now, source[name]), name
