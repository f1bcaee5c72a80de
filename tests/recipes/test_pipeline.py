from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from lightly_graft import zoo
from lightly_graft.errors import GraftError
from lightly_graft.run.pipeline import prepare_run, run_pipeline
from lightly_graft.training.checkpoints import load_encoder_state
from tests.recipes.pipeline_fixtures import write_tiny_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp_path = tmp_path_factory.mktemp("pipeline")
    recipe = write_tiny_recipe(tmp_path)
    plan = prepare_run(recipe, output=tmp_path / "run")
    summary = run_pipeline(plan, progress_bar=False)
    return tmp_path, summary


def test_pipeline__writes_the_run_layout(finished_run: tuple[Path, object]) -> None:
    tmp_path, summary = finished_run
    run = tmp_path / "run"
    for stage in ("mim", "cl"):
        for name in (
            "last.ckpt",
            "recipe.yaml",
            "metrics.csv",
            "encoder.pt",
            "done.json",
        ):
            assert (run / stage / name).is_file(), f"{stage}/{name}"
    for name in ("recipe.yaml", "backbone.pt", "backbone.json", "report.md"):
        assert (run / name).is_file(), name
    saved = (run / "cl" / "recipe.yaml").read_text()
    assert "image_size: 16" in saved  # resolved: auto values filled in
    assert "effective_lr:" in saved  # derived values beside the checkpoint
    report = (run / "report.md").read_text()
    assert "| mim | mae | 2 |" in report and "| cl | grafted_moco | 2 |" in report


def test_pipeline__step_ii_starts_from_step_i_weights(
    finished_run: tuple[Path, object],
) -> None:
    # Stage 0 of step ii (embeddings + block 0) is frozen in the tiny recipe, so its
    # weights at the end of step ii are the ones it started from: if they equal
    # step i's final weights, the graft handed them over. Block 2 trains.
    tmp_path, _ = finished_run
    step_i, _, _ = load_encoder_state(
        tmp_path / "run" / "mim" / "encoder.pt", "lightly_graft"
    )
    ckpt = torch.load(tmp_path / "run" / "cl" / "last.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    for key in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "cls_token"):
        online, target = state["backbone.vit." + key], step_i[key]
        torch.testing.assert_close(online, target, rtol=0, atol=0)
        # The momentum encoder got the same graft; its EMA of equal tensors,
        # m * w + (1 - m) * w, differs from w only by float rounding.
        momentum = state["backbone_momentum.vit." + key]
        torch.testing.assert_close(momentum, target, rtol=0, atol=1e-6)
    assert not torch.equal(
        state["backbone.vit.blocks.2.attn.qkv.weight"],
        step_i["blocks.2.attn.qkv.weight"],
    )
    # ... and they are not what a fresh initialisation gives.
    torch.manual_seed(3)
    fresh = zoo.get("grafted_moco").cls(
        batch_size_per_device=4,
        num_classes=0,
        backbone=json.loads((tmp_path / "run" / "backbone.json").read_text()),
    )
    assert not torch.equal(
        fresh.backbone.vit.blocks[0].attn.qkv.weight, step_i["blocks.0.attn.qkv.weight"]
    )


def test_pipeline__backbone_pt_loads_into_timm_with_same_features(
    finished_run: tuple[Path, object],
) -> None:
    tmp_path, _ = finished_run
    run = tmp_path / "run"
    spec = json.loads((run / "backbone.json").read_text())
    model = timm.create_model(
        spec["name"], pretrained=False, num_classes=0, **spec["kwargs"]
    )
    model.load_state_dict(torch.load(run / "backbone.pt", weights_only=True))
    model.eval()
    trained = zoo.get("grafted_moco").cls.load_from_checkpoint(run / "cl" / "last.ckpt")
    trained.eval()
    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images), trained(images), rtol=1e-5, atol=1e-6)


def test_pipeline__existing_run_is_refused(finished_run: tuple[Path, object]) -> None:
    tmp_path, _ = finished_run
    with pytest.raises(
        GraftError, match="already exists .*stages done: mim, cl.*--resume"
    ):
        prepare_run(tmp_path / "tiny.yaml", output=tmp_path / "run")


def test_pipeline__resume_with_another_recipe_is_refused(
    finished_run: tuple[Path, object],
) -> None:
    tmp_path, _ = finished_run
    with pytest.raises(GraftError, match=r"differs .* at stages\[1\]\.epochs"):
        prepare_run(
            tmp_path / "tiny.yaml",
            output=tmp_path / "run",
            resume=True,
            overrides=["stages.1.epochs=3"],
        )


def test_pipeline__resume_of_a_finished_run_changes_nothing(
    finished_run: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path, first = finished_run
    run = tmp_path / "run"
    before = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()
    }
    plan = prepare_run(tmp_path / "tiny.yaml", output=run, resume=True)
    summary = run_pipeline(plan, progress_bar=False)
    out = capsys.readouterr().out
    assert "finished earlier" in out and "nothing to do" in out
    after = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()
    }
    assert {p: v for p, v in after.items() if p.name != ".lock"} == {
        p: v for p, v in before.items() if p.name != ".lock"
    }
    assert [s.seconds for s in summary.stages] == [s.seconds for s in first.stages]  # type: ignore[attr-defined]


def test_pipeline__knn_floor_and_history_in_report(tmp_path: Path) -> None:
    pytest.importorskip("lightly_graft.training.knn_monitor")
    recipe = write_tiny_recipe(tmp_path, knn=True)
    summary = run_pipeline(
        prepare_run(recipe, output=tmp_path / "run"), progress_bar=False
    )
    assert summary.floor is not None and 0.0 <= summary.floor.top1 <= 1.0
    assert [len(s.history) for s in summary.stages] == [2, 2]  # every epoch
    assert [p.epoch for p in summary.stages[1].history] == [1, 2]
    report = (tmp_path / "run" / "report.md").read_text()
    assert (
        "| random init (floor) |" in report
        and "![kNN top-1 per epoch](knn.png)" in report
    )
    assert (tmp_path / "run" / "knn.png").is_file()
    assert list((tmp_path / "run" / "cl").glob("best-knn-epoch*.ckpt"))


def test_pipeline__report_embeds_the_analysis_figures(
    finished_run: tuple[Path, object],
) -> None:
    tmp_path, _ = finished_run
    run = tmp_path / "run"
    report = (run / "report.md").read_text()
    assert "## Analysis" in report
    embedded = [
        line[line.index("](") + 2 : -1]
        for line in report.splitlines()
        if line.startswith("![") and "analysis/" in line
    ]
    # The recipe's default analyses: attention distance and VIC, one figure each
    # (or more), every stage's encoder drawn on the same figure.
    assert any("attention" in path for path in embedded)
    assert any("vic" in path for path in embedded)
    for path in embedded:
        figure = run / path
        assert figure.is_file() and figure.stat().st_size > 1000, path
    csvs = sorted((run / "analysis").rglob("*.csv"))
    assert csvs and all("mim" in p.read_text() and "cl" in p.read_text() for p in csvs)
