"""`lightly-graft bench` end to end on the shipped smoke suite (every arm of the
Layer Grafted suite for two steps): tables, resume, refusal of a changed suite,
FLOP matching, and bad suite files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from lightly_graft.bench.suite import load_suite
from lightly_graft.cli import main

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "recipes" / "suites" / "smoke.yaml"
FULL = ROOT / "recipes" / "suites" / "layer_grafted_fmnist.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bench") / "smoke"
    assert main(["bench", str(SUITE), "--output", str(output)]) == 0
    return output


def _mtimes(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (root / "results").rglob("*.json")}


def test_bench__writes_tables_for_every_arm(bench: Path) -> None:
    suite = load_suite(SUITE)
    results = json.loads((bench / "results.json").read_text())
    assert set(results["arms"]) == {arm.name for arm in suite.arms}
    for name, arm in results["arms"].items():
        assert arm["seeds"] == [0], name
        # The smoke suite leaves fine-tuning to test_bench_units.
        assert set(arm["metrics"]) == {"knn", "linear", "fewshot_1%", "fewshot_10%"}
        for metric in arm["metrics"].values():
            assert 0.0 <= metric["mean"] <= 1.0
            assert metric["values"] == [metric["mean"]]
        assert arm["flops"] > 0
    rows = list(csv.DictReader((bench / "table.csv").open()))
    assert [r["arm"] for r in rows] == [arm.name for arm in suite.arms]
    table = (bench / "table.md").read_text()
    assert "| MAE (`mae`) |" in table and "## The paper's claims" in table
    assert set(results["sweep"]) == {"mae", "moco"}
    for png in (
        "metrics.png",
        "knn_curves.png",
        "vic/vic.png",
        "gradient-conflict/gradient_conflict.png",
    ):
        assert (bench / "figures" / png).is_file(), png


def test_bench__budgets(bench: Path) -> None:
    results = json.loads((bench / "results.json").read_text())["arms"]
    mae, lg = results["mae"], results["layer_grafted"]
    # (a) the paper's protocol: step ii's FLOPs come on top of the MAE run it grafts.
    own = sum(stage["flops"] for stage in lg["stages"])
    assert lg["flops"] == mae["flops"] + own
    # (b) matched compute: within half a step per epoch of the target.
    for name in ("moco_matched", "mtl_matched"):
        stage = results[name]["stages"][0]
        slack = 0.5 * stage["epochs"] * stage["flops_per_step"]
        assert abs(results[name]["flops"] - lg["flops"]) <= slack, name
    assert results["moco_matched"]["flops"] > results["moco"]["flops"]


def test_bench__a_finished_arm_seed_is_not_rerun(
    bench: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _mtimes(bench)
    assert main(["bench", str(SUITE), "--output", str(bench), "--resume"]) == 0
    assert _mtimes(bench) == before
    assert "training in" not in capsys.readouterr().out


def test_bench__an_interrupted_arm_seed_continues(
    bench: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = bench / "results" / "vicreg" / "seed0.json"
    saved = json.loads(result.read_text())
    result.unlink()  # trained, not yet evaluated
    others = _mtimes(bench)
    assert main(["bench", str(SUITE), "--output", str(bench), "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.count("training in") == 1 and "skipped (--resume)" in out
    again = json.loads(result.read_text())
    assert again["metrics"] == saved["metrics"]
    assert {k: v for k, v in _mtimes(bench).items() if k != str(result)} == others


def test_bench__existing_directory_needs_resume(
    bench: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(SUITE), "--output", str(bench)]) == 2
    err = capsys.readouterr().err.strip()
    assert "add --resume" in err and len(err.splitlines()) == 1


def test_bench__changed_suite_is_refused(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = yaml.safe_load(SUITE.read_text())
    tree["extends"] = str(FULL)
    tree["evaluation"]["linear"]["epochs"] = 3
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(tree))
    before = _mtimes(bench)
    assert main(["bench", str(changed), "--output", str(bench), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "suite.evaluation.linear.epochs" in err and "differs" in err
    assert _mtimes(bench) == before
    # An arm that has run may not change either.
    tree["evaluation"]["linear"]["epochs"] = 2
    tree["stage_overrides"]["batch_size"] = 8
    changed.write_text(yaml.safe_dump(tree))
    assert main(["bench", str(changed), "--output", str(bench), "--resume"]) == 2
    assert re.search(r"arms\.\w+\.stages\[0\]\.batch_size", capsys.readouterr().err)
    tree["stage_overrides"]["batch_size"] = 16
    # What only changes the report (titles, claims, figures) is not a change.
    tree["evaluation"]["linear"]["epochs"] = 2
    tree["claims"] = []
    changed.write_text(yaml.safe_dump(tree))
    assert main(["bench", str(changed), "--output", str(bench), "--resume"]) == 0
    assert _mtimes(bench) == before


BAD = [
    ("name: x\n", "backbone: missing; it is required"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: x\nbackbone: vit_tiny_patch16_224\narms: []\n", "arms: "),
    ("name: x\nname: y\n", "duplicate key"),
    ("extends: nowhere.yaml\n", "extends: 'nowhere.yaml' does not exist"),
    (
        "extends: SMOKE\nNO_REFS\nlr_sweep: null\narms:\n  - {name: a, recipe: missing.yaml}\n",
        "arms[0].recipe: ",
    ),
    (
        "extends: SMOKE\nNO_REFS\nlr_sweep: null\narms:\n  - {name: a, stages: [{name: s, method: mea, epochs: 1, batch_size: 8, optimizer: {base_lr: 0.001}}]}\n",
        "did you mean 'mae'",
    ),
    (
        "extends: SMOKE\nNO_REFS\nlr_sweep: null\narms:\n  - {name: a, stages: [{name: s, method: mae, epochs: 1, batch_size: 8, optimizer: {base_lr: 0.001}}], graft_from: b}\n",
        "'b' is not an arm",
    ),
    (
        "extends: SMOKE\nNO_REFS\nlr_sweep: {scales: [1, 2], arms: null}\narms:\n  - {name: a, stages: [{name: s, method: mae, epochs: 1, batch_size: 8, optimizer: {}}]}\n",
        "the LR sweep has nothing to scale",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bench__bad_suite_exits_2_with_one_line(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "suite.yaml"
    no_refs = "figures: {gradient_conflict: [], vic: [], attention_distance: [], tsne: []}\nclaims: []"
    path.write_text(text.replace("SMOKE", str(SUITE)).replace("NO_REFS", no_refs))
    output = tmp_path / "out"
    assert main(["bench", str(path), "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightly-graft bench: error: "), err
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not output.exists()


def test_bench__unknown_only_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["bench", str(SUITE), "--output", str(tmp_path / "o"), "--only", "mocco"])
        == 2
    )
    assert "did you mean 'moco'" in capsys.readouterr().err


def test_bench__time_left_counts_only_jobs_without_a_result(bench: Path) -> None:
    from lightly_graft.bench.arms import Job, resolve_arms
    from lightly_graft.bench.bench_dir import Bench
    from lightly_graft.bench.budget import total_flops
    from lightly_graft.bench.runner import _flops_left, _order

    suite = load_suite(SUITE)
    stages = resolve_arms(suite, SUITE.parent, "smoke")
    opened = Bench(suite, "smoke", stages, bench)
    opened.prepare(resume=True)
    arms = _order(suite, None)
    assert _flops_left(opened, suite, arms, [0]) == 0.0  # everything finished
    vicreg = suite.arm("vicreg")
    result = opened.result_path(Job("vicreg", 0))
    saved = result.read_text()
    result.unlink()
    try:
        per_job = sum(
            total_flops(opened.own_stages(vicreg), opened.stage_costs(vicreg))
        )
        assert _flops_left(opened, suite, arms, [0]) == per_job > 0
    finally:
        result.write_text(saved)


def test_bench__report_only_keeps_figures_whose_checkpoints_are_gone(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A published bench directory: results and figures, no checkpoints.
    import shutil

    published = tmp_path / "published"
    shutil.copytree(bench, published)
    report = ["bench", str(SUITE), "--output", str(published), "--report-only"]
    assert main(report) == 0
    before = json.loads((published / "results.json").read_text())
    pngs = {
        str(p.relative_to(published)): p.read_bytes()
        for p in (published / "figures").rglob("*.png")
        if p.parent.name != "figures"  # metrics and kNN curves are redrawn
    }
    assert pngs and before["slopes"] and before["claims"]
    for checkpoint in [*published.rglob("*.ckpt"), *published.rglob("encoder.pt")]:
        checkpoint.unlink()
    capsys.readouterr()
    assert main(report) == 0
    assert "keeping the figures of an earlier report" in capsys.readouterr().out
    for name, data in pngs.items():
        assert (published / name).read_bytes() == data, name
    after = json.loads((published / "results.json").read_text())
    assert after["slopes"] == before["slopes"]
    # (as text: a margin of one seed is NaN, and NaN != NaN)
    assert json.dumps(after["claims"]) == json.dumps(before["claims"])
    table = (published / "table.md").read_text()
    assert all(f"(figures/{Path(n).relative_to('figures')})" in table for n in pngs)
