"""Every shipped recipe validates, and runs a step when shrunk with --set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from graft_testing import TINY_METHOD_ARGS

from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.recipes import load_recipe
from lightly_graft.recipes.resolve import resolve_recipe
from lightly_graft.run.pipeline import prepare_run, run_pipeline
from tests.recipes.pipeline_fixtures import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
# Suites (recipes/suites/) are not recipes: tests/bench loads and runs them.
RECIPES = sorted(
    p for p in (ROOT / "recipes").rglob("*.yaml") if "suites" not in p.parts
)
TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 24, "depth": 3, "num_heads": 2}


def test_recipes_are_shipped() -> None:
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    assert "quickstart.yaml" in names
    assert {n for n in names if n.startswith("paper/vit_b16_imagenet_")}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_loads_and_resolves(path: Path) -> None:
    recipe = resolve_recipe(load_recipe(path))
    assert recipe.stages and recipe.data.image_size is not None


def _shrink(path: Path, data: Path, checkpoint: Path) -> list[str]:
    recipe = load_recipe(path)
    overrides = [
        f"data.path={data}",
        "data.knn_bank_size=6",
        "data.knn_query_size=3",
        "data.eval_batch_size=8",
        "data.num_workers=0",
        "accelerator=cpu",
        "devices=1",
        "num_nodes=1",
        "strategy=auto",
        "random_init_knn=false",
        "analysis=[]",
        *(f"backbone.{k}={v}" for k, v in TINY.items()),
    ]
    for i, stage in enumerate(recipe.stages):
        overrides += [
            f"stages.{i}.epochs=1",
            f"stages.{i}.batch_size=4",
            f"stages.{i}.limit_train_batches=1",
            f"stages.{i}.precision=32-true",
            f"stages.{i}.knn.every_n_epochs=0",
        ]
        overrides += [
            f"stages.{i}.method_args.{k}={v}"
            for k, v in TINY_METHOD_ARGS[stage.method].items()
        ]
        if "gather_distributed" in stage.method_args:
            overrides.append(f"stages.{i}.method_args.gather_distributed=false")
        if stage.graft is not None and stage.graft.checkpoint is not None:
            overrides.append(f"stages.{i}.graft.checkpoint={checkpoint}")
        if stage.anchor.num_blocks is not None:
            overrides.append(f"stages.{i}.anchor.num_blocks=1")
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_runs_a_step_when_shrunk(path: Path, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "images", per_class=4)
    torch.manual_seed(0)
    vit = build_vit(BackboneSpec(load_recipe(path).backbone.name, TINY))
    checkpoint = tmp_path / "mae_pretrain.pth"
    torch.save({"model": vit.state_dict()}, checkpoint)  # MAE's released format
    plan = prepare_run(
        path, overrides=_shrink(path, data, checkpoint), output=tmp_path / "run"
    )
    summary = run_pipeline(plan, progress_bar=False)
    assert summary.backbone.is_file() and summary.report.is_file()
