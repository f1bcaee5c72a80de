"""``lightly-graft eval`` through ``lightly_graft.cli.main`` on a tiny checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from graft_testing import TINY_BACKBONE
from PIL import Image

from lightly_graft.cli import main
from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.training.checkpoints import export_timm, save_backbone

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """DIR/train/<class>/*.png (8 per class) and DIR/val/<class>/*.png (4 per class):
    32 px images whose colour gives the class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noise = rng.integers(-40, 40, size=(32, 32, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A run's backbone.pt: timm state dict with backbone.json beside it."""
    torch.manual_seed(0)
    spec = BackboneSpec.coerce(dict(TINY_BACKBONE))
    path = tmp_path_factory.mktemp("run") / "backbone.pt"
    export_timm(path, build_vit(spec), spec)
    return path


def _eval(checkpoint: Path, data: Path, output: Path, *extra: str) -> int:
    args = [
        "eval",
        str(checkpoint),
        "--data",
        str(data),
        "--output",
        str(output),
        "--batch-size",
        "8",
        "--device",
        "cpu",
        *extra,
    ]
    return main(args)


def _metrics(output: Path) -> dict:
    record = json.loads((output / "metrics.json").read_text())
    assert (output / "metrics.md").read_text().startswith("# ")
    return record


def test_eval__knn(checkpoint, image_folder, tmp_path):
    pytest.importorskip("lightly_graft.data")
    assert (
        _eval(checkpoint, image_folder, tmp_path, "--protocol", "knn", "--k", "5") == 0
    )
    record = _metrics(tmp_path)
    assert record["protocol"] == "knn" and record["format"] == "timm"
    assert record["backbone"]["name"] == TINY_BACKBONE["name"]
    assert 0.0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 1.0
    assert record["metrics"]["k"] == 5


def test_eval__linear_and_fewshot(checkpoint, image_folder, tmp_path):
    pytest.importorskip("lightly_graft.data")
    linear = tmp_path / "linear"
    code = _eval(
        checkpoint, image_folder, linear, "--protocol", "linear", "--epochs", "3",
        "--lrs", "0.1", "1.0",
    )  # fmt: skip
    assert code == 0
    metrics = _metrics(linear)["metrics"]
    assert set(metrics["per_lr"]) == {"0.1", "1.0"}
    fewshot = tmp_path / "fewshot"
    code = _eval(
        checkpoint, image_folder, fewshot, "--protocol", "fewshot",
        "--fractions", "0.5", "--cs", "1.0",
    )  # fmt: skip
    assert code == 0
    result = _metrics(fewshot)["metrics"]["50%"]
    assert result["num_labelled"] == 12  # 4 of each of the 3 classes
    subsets = json.loads((fewshot / "fewshot_subsets.json").read_text())
    assert len(subsets["subsets"]["0.5"]) == 12


@pytest.mark.slow
def test_eval__finetune_and_partial(checkpoint, image_folder, tmp_path):
    pytest.importorskip("lightly_graft.data")
    common = ("--epochs", "1", "--warmup-epochs", "0")
    assert (
        _eval(
            checkpoint, image_folder, tmp_path / "ft", "--protocol", "finetune", *common
        )
        == 0
    )
    assert _metrics(tmp_path / "ft")["metrics"]["frozen_parameters"] == 0
    code = _eval(
        checkpoint, image_folder, tmp_path / "partial", "--protocol", "partial",
        "--freeze-blocks", "2", *common,
    )  # fmt: skip
    assert code == 0
    metrics = _metrics(tmp_path / "partial")["metrics"]
    assert metrics["frozen_blocks"] == 2 and metrics["frozen_parameters"] > 0


def test_eval__lightly_graft_format(image_folder, tmp_path):
    pytest.importorskip("lightly_graft.data")
    spec = BackboneSpec.coerce(dict(TINY_BACKBONE))
    path = save_backbone(tmp_path / "model.pt", build_vit(spec), spec)
    code = _eval(
        path, image_folder, tmp_path / "out", "--protocol", "knn", "--k", "3",
        "--format", "lightly_graft",
    )  # fmt: skip
    assert code == 0


def test_eval__missing_checkpoint_exits_2(tmp_path, capsys):
    code = _eval(tmp_path / "nope.pt", tmp_path, tmp_path, "--protocol", "knn")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightly-graft eval: error:") and "does not exist" in err
    assert len(err.splitlines()) == 1


def test_eval__wrong_format_exits_2(checkpoint, tmp_path, capsys):
    code = _eval(checkpoint, tmp_path, tmp_path, "--protocol", "knn", "--format", "mae")
    assert code == 2
    err = capsys.readouterr().err
    assert "is not a 'mae' checkpoint" in err and "plain 'timm' state dict" in err


def test_eval__mismatched_model_exits_2(checkpoint, tmp_path, capsys):
    other = dict(TINY_BACKBONE, embed_dim=64)
    code = _eval(
        checkpoint, tmp_path, tmp_path, "--protocol", "knn",
        "--model", json.dumps(other),
    )  # fmt: skip
    assert code == 2
    assert "do not fit the model" in capsys.readouterr().err


def test_eval__partial_needs_freeze_blocks(checkpoint, tmp_path, capsys):
    assert _eval(checkpoint, tmp_path, tmp_path, "--protocol", "partial") == 2
    assert "--freeze-blocks" in capsys.readouterr().err


@pytest.mark.slow
def test_eval__finetune_on_a_label_fraction_shares_the_fewshot_subset(
    checkpoint, image_folder, tmp_path
):
    pytest.importorskip("lightly_graft.data")
    subsets = tmp_path / "subsets.json"
    # The fewshot protocol draws and saves the subsets ...
    code = _eval(
        checkpoint, image_folder, tmp_path / "fewshot", "--protocol", "fewshot",
        "--fractions", "0.25", "0.5", "--cs", "1.0", "--subsets", str(subsets),
    )  # fmt: skip
    assert code == 0
    saved = json.loads(subsets.read_text())["subsets"]["0.5"]
    # ... and fine-tuning on 50% of the labels reads the same images from the file.
    code = _eval(
        checkpoint, image_folder, tmp_path / "ft", "--protocol", "finetune",
        "--label-fraction", "0.5", "--subsets", str(subsets),
        "--epochs", "1", "--warmup-epochs", "0",
    )  # fmt: skip
    assert code == 0
    record = _metrics(tmp_path / "ft")
    assert record["metrics"]["num_labelled"] == len(saved) == 12
    assert record["metrics"]["label_fraction"] == 0.5
    assert "50% of the labels (12)" in (tmp_path / "ft" / "metrics.md").read_text()
    # Without a subsets file the draw is the same for the same seed.
    code = _eval(
        checkpoint, image_folder, tmp_path / "ft2", "--protocol", "partial",
        "--freeze-blocks", "1", "--label-fraction", "0.5",
        "--epochs", "1", "--warmup-epochs", "0",
    )  # fmt: skip
    assert code == 0
    drawn = json.loads((tmp_path / "ft2" / "fewshot_subsets.json").read_text())
    assert drawn["subsets"]["0.5"] == saved


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--protocol", "knn", "--label-fraction", "0.1"), "only applies to"),
        (("--protocol", "finetune", "--label-fraction", "1.5"), r"in \(0, 1\]"),
    ],
)
def test_eval__bad_label_fraction_is_one_line_and_exit_2(
    checkpoint, image_folder, tmp_path, capsys, extra, message
):
    assert _eval(checkpoint, image_folder, tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--label-fraction" in err
    assert re.search(message, err)
