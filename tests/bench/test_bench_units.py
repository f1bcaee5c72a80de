"""Units of `lightly-graft bench`: the suite schema's errors, FLOP matching,
aggregation, claims, and validation-chosen hyperparameters."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightly_graft.bench.budget import StageCost, match_steps, total_flops
from lightly_graft.bench.figures import (
    conflict_during_training,
    plot_conflict_during_training,
)
from lightly_graft.bench.report import check_claims, mean_std
from lightly_graft.bench.suite import dependencies, suite_from_tree
from lightly_graft.errors import RecipeError
from lightly_graft.eval import fewshot_eval, linear_eval

BASE: dict[str, Any] = {
    "name": "s",
    "backbone": {"name": "vit_tiny_patch16_224"},
    "arms": [
        {"name": "mae", "stages": [{}]},
        {"name": "lg", "stages": [{}], "graft_from": "mae"},
        {"name": "moco_matched", "stages": [{}], "budget": {"match": "lg"}},
    ],
}


def _tree(**changes: Any) -> dict[str, Any]:
    tree = copy.deepcopy(BASE)
    tree.update(changes)
    return tree


def test_suite__dependencies_nearest_first() -> None:
    suite = suite_from_tree(_tree(), source="suite 'x'")
    assert dependencies(suite, suite.arm("moco_matched")) == ["lg", "mae"]
    assert dependencies(suite, suite.arm("mae")) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"armz": []}, "armz: unknown key; valid keys here: 'accelerator', 'arms'"),
        ({"armz": []}, "(did you mean 'arms'?)"),
        (
            {"evaluation": {"protocols": ["linaer"]}},
            "evaluation.protocols[0]: got 'linaer' (string); valid options: 'fewshot', "
            "'finetune', 'knn', 'linear' (did you mean 'linear'?)",
        ),
        (
            {"evaluation": {"val_fraction": 1.5}},
            "evaluation.val_fraction: got 1.5 (number): must be < 1",
        ),
        ({"seeds": []}, "seeds: "),
        (
            {"lr_sweep": {"scales": [0]}},
            "lr_sweep.scales[0]: got 0 (integer): must be > 0",
        ),
        (
            {"lr_sweep": {"scales": [1], "arms": ["moko"]}},
            "lr_sweep.arms[0]: 'moko' is not an arm",
        ),
        (
            {"figures": {"vic": ["maee"]}},
            "figures.vic[0]: 'maee' is not an arm (did you mean 'mae'?)",
        ),
        (
            {"claims": [{"claim": "c", "metric": "linear", "order": ["mae"]}]},
            "needs a metric and at least two arms",
        ),
        (
            {"claims": [{"claim": "c", "metric": "linar", "order": ["mae", "lg"]}]},
            "claims[0].metric: got 'linar' (string); valid options: 'fewshot_1%'",
        ),
        (
            {"accelerator": "tpu"},
            "accelerator: got 'tpu' (string); valid options: 'auto'",
        ),
        ({"name": "a b"}, "name: got 'a b' (string): String should match pattern"),
    ],
)
def test_suite__errors_name_key_and_options(change: dict, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        suite_from_tree(_tree(**change), source="suite 'x.yaml'")
    message = str(info.value)
    assert message.startswith("suite 'x.yaml': ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("arm_change", "expected"),
    [
        (
            {"graft_from": "maee"},
            "arms[1].graft_from: 'maee' is not an arm (did you mean 'mae'?)",
        ),
        ({"graft_from": "lg"}, "arms[1].graft_from: an arm cannot refer to itself"),
        (
            {"recipe": "x.yaml"},
            "arms[1]: give exactly one of 'recipe' and 'stages' (got both)",
        ),
        (
            {"budgett": {}},
            "arms[1].budgett: unknown key; valid keys here: 'budget', 'graft_from'",
        ),
        (
            {"seeds": [-1]},
            "arms[1].seeds[0]: got -1 (integer): must be >= 0",
        ),
    ],
)
def test_suite__arm_errors(arm_change: dict, expected: str) -> None:
    tree = _tree()
    tree["arms"][1].update(arm_change)
    with pytest.raises(RecipeError, match=None) as info:
        suite_from_tree(tree, source="suite 'x.yaml'")
    assert expected in str(info.value)


def test_suite__cycle_is_refused() -> None:
    tree = _tree()
    tree["arms"][0]["budget"] = {"match": "moco_matched"}
    with pytest.raises(RecipeError, match="cycle: mae -> moco_matched -> lg -> mae"):
        suite_from_tree(tree, source="suite 'x'")


def test_suite__duplicate_arm_names_are_refused() -> None:
    tree = _tree()
    tree["arms"].append({"name": "lg", "stages": [{}]})
    with pytest.raises(
        RecipeError, match=r"arms\[3\].name: 'lg' is used by an earlier arm"
    ):
        suite_from_tree(tree, source="suite 'x'")


def test_match_steps__hits_the_target_within_half_a_step_per_epoch() -> None:
    stages = [{"name": "a", "epochs": 6, "limit_train_batches": 100}]
    costs = [StageCost(flops_per_step=1_000, full_epoch_batches=468)]
    target = 1.37 * 600 * 1_000
    matched = match_steps(stages, costs, target)
    flops = sum(total_flops(matched, costs))
    assert matched[0]["epochs"] == 8  # round(6 * 1.37)
    assert abs(flops - target) <= 0.5 * matched[0]["epochs"] * 1_000
    assert matched[0]["name"] == "a"


def test_match_steps__more_epochs_when_an_epoch_is_full() -> None:
    stages = [{"name": "a", "epochs": 1, "limit_train_batches": None}]
    costs = [StageCost(flops_per_step=10, full_epoch_batches=50)]
    matched = match_steps(stages, costs, 10 * 175)  # 3.5 full epochs of steps
    assert matched[0]["limit_train_batches"] <= 50
    assert sum(total_flops(matched, costs)) == pytest.approx(1750, abs=10 * 2)


def test_match_steps__several_stages_keep_their_shares() -> None:
    stages = [
        {"name": "a", "epochs": 4, "limit_train_batches": 100},
        {"name": "b", "epochs": 2, "limit_train_batches": 100},
    ]
    costs = [StageCost(2, 1000), StageCost(5, 1000)]
    own = sum(total_flops(stages, costs))  # 800 + 1000
    matched = match_steps(stages, costs, 2 * own)
    assert [s["epochs"] for s in matched] == [8, 4]
    assert sum(total_flops(matched, costs)) == 2 * own


def test_mean_std__hand_computed() -> None:
    mean, std = mean_std([0.70, 0.74, 0.75])
    assert mean == pytest.approx(0.73)
    # sqrt(((-0.03)^2 + 0.01^2 + 0.02^2) / 2) = sqrt(0.0007)
    assert std == pytest.approx(math.sqrt(0.0007))
    assert math.isnan(mean_std([0.5])[1])


class _Bench:
    def __init__(self, claims: list[dict[str, Any]]) -> None:
        self.suite = suite_from_tree(_tree(claims=claims), source="suite 'x'")


def _arm(mean: float, std: float) -> dict[str, Any]:
    return {"metrics": {"linear": {"mean": mean, "std": std, "values": []}}}


def test_claims__margin_in_combined_std() -> None:
    bench = _Bench([{"claim": "lg > mae", "metric": "linear", "order": ["lg", "mae"]}])
    collected = {"arms": {"lg": _arm(0.80, 0.03), "mae": _arm(0.75, 0.04)}}
    (claim,) = check_claims(bench, collected, {})  # type: ignore[arg-type]
    assert claim["margin"] == pytest.approx(0.05 / 0.05)
    assert claim["verdict"] == "reproduced"
    collected = {"arms": {"lg": _arm(0.76, 0.03), "mae": _arm(0.75, 0.04)}}
    (claim,) = check_claims(bench, collected, {})  # type: ignore[arg-type]
    assert claim["verdict"] == "reproduced within noise"
    collected = {"arms": {"lg": _arm(0.70, 0.03), "mae": _arm(0.75, 0.04)}}
    (claim,) = check_claims(bench, collected, {})  # type: ignore[arg-type]
    assert claim["verdict"] == "not reproduced"
    assert claim["margin"] == pytest.approx(-1.0)


def test_claims__missing_arm_and_slope() -> None:
    bench = _Bench(
        [
            {"claim": "lg > mae", "metric": "linear", "order": ["lg", "mae"]},
            {"claim": "falls", "kind": "falls_with_depth", "order": ["mae"]},
        ]
    )
    order, slope = check_claims(
        bench, {"arms": {"lg": _arm(0.8, 0.01)}}, {"mae": {"slope": -0.02, "std": 0.01}}
    )  # type: ignore[arg-type]
    assert order["verdict"] == "not run"
    assert slope["verdict"] == "reproduced"
    assert slope["margin"] == pytest.approx(2.0)
    (_, weak) = check_claims(
        bench, {"arms": {}}, {"mae": {"slope": -0.01, "std": 0.02}}
    )  # type: ignore[arg-type]
    assert weak["verdict"] == "reproduced within noise"
    (_, rises) = check_claims(
        bench, {"arms": {}}, {"mae": {"slope": 0.01, "std": 0.02}}
    )  # type: ignore[arg-type]
    assert rises["verdict"] == "not reproduced" and rises["margin"] == pytest.approx(
        -0.5
    )
    (_, missing) = check_claims(bench, {"arms": {}}, {})  # type: ignore[arg-type]
    assert missing["verdict"] == "not run"


def test_median_slope__slope_of_the_medians_and_its_bootstrap_noise(
    tmp_path: Path,
) -> None:
    from lightly_graft.bench.figures import median_slope

    # Medians fall by 0.1 a block exactly; the spread within a block sets the
    # noise: a tight spread gives a small bootstrap std, a wide one a larger.
    def write(spread: float) -> Path:
        path = tmp_path / f"values_{spread}.csv"
        rows = ["label,heads,block,batch,cosine"]
        rng = np.random.default_rng(0)
        for block in range(4):
            noise = rng.normal(0, spread, 15)
            noise -= np.median(noise)  # median exactly the block's value
            for i, value in enumerate(0.3 - 0.1 * block + noise):
                rows.append(f"mtl,h,{block},{i},{value}")
        rows.append("mtl,h,3,99,nan")  # skipped
        path.write_text("\n".join(rows) + "\n")
        return path

    tight, wide = median_slope(write(0.01)), median_slope(write(0.2))
    assert tight is not None and wide is not None
    assert tight["slope"] == pytest.approx(-0.1, abs=1e-9)
    assert wide["slope"] == pytest.approx(-0.1, abs=1e-9)
    assert 0 < tight["std"] < 0.01 < wide["std"]
    one_block = tmp_path / "one.csv"
    one_block.write_text("label,heads,block,batch,cosine\nmtl,h,0,0,0.1\n")
    assert median_slope(one_block) is None


def _features(
    seed: int, n: int, shift: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centres = torch.eye(4, 8) * 3
    x = centres[labels] + torch.randn(n, 8, generator=generator) + shift
    return x, labels


def test_linear_eval__lr_chosen_on_validation_not_test() -> None:
    train_x, train_y = _features(0, 400)
    val_x, val_y = _features(1, 100)
    test_x, test_y = _features(2, 100)
    result = linear_eval(
        train_x,
        train_y,
        test_x,
        test_y,
        4,
        lrs=(0.001, 0.1),
        epochs=3,
        val_features=val_x,
        val_labels=val_y,
    )
    per_lr = result.per_lr
    assert result.best_lr == max(per_lr, key=lambda lr: per_lr[lr]["val_top1"])
    assert result.top1 == per_lr[result.best_lr]["top1"]
    with pytest.raises(ValueError, match="both val_features and val_labels"):
        linear_eval(
            train_x,
            train_y,
            test_x,
            test_y,
            4,
            lrs=(0.1,),
            epochs=1,
            val_features=val_x,
        )


def test_fewshot_eval__c_chosen_on_validation() -> None:
    train_x, train_y = _features(0, 400)
    val_x, val_y = _features(1, 100)
    test_x, test_y = _features(2, 100)
    shots = fewshot_eval(
        train_x,
        train_y,
        test_x,
        test_y,
        4,
        fractions=(0.1,),
        cs=(1e-4, 10.0),
        val_features=val_x,
        val_labels=val_y,
    )
    shot = shots["10%"]
    per_c = {float(c): acc for c, acc in shot["per_c"].items()}
    assert shot["best_c"] == max(per_c, key=lambda c: per_c[c]["val_top1"])
    assert shot["top1"] == per_c[shot["best_c"]]["top1"]


def test_conflict_during_training__median_per_epoch_and_block(tmp_path: Path) -> None:
    rows = [
        "epoch,step,grad_conflict/block_0,grad_conflict/block_1,train_loss",
        "0,0,0.5,0.1,",
        "0,10,0.3,-0.1,",
        "0,10,,,1.0",
        "1,20,0.2,-0.3,",
    ]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "metrics-1.csv").write_text(
        "epoch,step,grad_conflict/block_0\n1,30,0.4\n"
    )
    per_epoch = conflict_during_training(tmp_path)
    assert per_epoch == {
        0: {0: pytest.approx(0.4), 1: pytest.approx(0.0)},
        1: {0: pytest.approx(0.3), 1: pytest.approx(-0.3)},
    }
    png = plot_conflict_during_training(per_epoch, tmp_path / "fig8.png", title="t")
    assert png.is_file()


def test_evaluate__finetune_protocol_trains_a_copy(tmp_path: Path) -> None:
    from graft_testing import TINY_BACKBONE

    from lightly_graft.bench.evaluate import evaluate
    from lightly_graft.bench.suite import Evaluation
    from lightly_graft.data import default_normalize
    from lightly_graft.modules.backbone import BackboneSpec, build_vit

    spec = dict(TINY_BACKBONE)
    vit = build_vit(
        BackboneSpec(spec.pop("name"), {**spec, "img_size": 28, "patch_size": 14})
    )
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    settings = Evaluation.model_validate(
        {
            "protocols": ["knn", "finetune"],
            "train_size": 200,
            "test_size": 50,
            "knn": {"k": 5},
            "finetune": {"epochs": 1, "label_fraction": 0.5, "batch_size": 32},
        }
    )
    result = evaluate(
        vit,
        "default",
        default_normalize("default"),
        settings,
        device=torch.device("cpu"),
        workdir=tmp_path,
    )
    assert set(result["metrics"]) == {"knn", "finetune"}
    assert 0.0 <= result["metrics"]["finetune"] <= 1.0
    # Nothing is chosen on the val split here: half of all 200 training images.
    assert result["details"]["finetune"]["num_labelled"] == 100
    for key, value in vit.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
