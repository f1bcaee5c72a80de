from __future__ import annotations

import os
from pathlib import Path

from lightly_graft.run.report import (
    KNNPoint,
    StageSummary,
    knn_table,
    read_knn_history,
    write_report,
)

HEADER = "epoch,knn/top1,knn/top5,step,train_loss\n"


def test_read_knn_history__skips_rows_without_knn_and_counts_epochs(
    tmp_path: Path,
) -> None:
    (tmp_path / "metrics.csv").write_text(
        HEADER + "0,,,3,1.5\n0,0.5,0.9,4,\n1,0.6,0.95,9,\n"
    )
    assert read_knn_history(tmp_path) == (KNNPoint(1, 0.5, 0.9), KNNPoint(2, 0.6, 0.95))


def test_read_knn_history__merges_resumed_sessions(tmp_path: Path) -> None:
    (tmp_path / "metrics-1.csv").write_text(HEADER + "0,0.5,0.9,4,\n1,0.55,0.9,9,\n")
    (tmp_path / "metrics.csv").write_text(HEADER + "1,0.6,0.95,9,\n2,0.7,0.97,14,\n")
    history = read_knn_history(tmp_path)
    assert [(p.epoch, p.top1) for p in history] == [(1, 0.5), (2, 0.6), (3, 0.7)]


def test_read_knn_history__no_file_is_empty(tmp_path: Path) -> None:
    assert read_knn_history(tmp_path) == ()


def test_knn_table__floor_and_gain_in_points() -> None:
    floor = KNNPoint(0, 0.5, 0.9)
    stages = [
        StageSummary("mae", "mae", 2, 30.0, (KNNPoint(2, 0.55, 0.95),)),
        StageSummary("moco", "grafted_moco", 4, 90.0, (KNNPoint(4, 0.634, 0.99),)),
        StageSummary("extra", "mae", 1, 5.0, ()),
    ]
    table = knn_table(floor, stages).splitlines()
    assert table[2] == "| random init (floor) | - | 0 | 50.0 | 90.0 | - | - |"
    assert table[3] == "| mae | mae | 2 | 55.0 | 95.0 | +5.0 | 30 s |"
    assert table[4] == "| moco | grafted_moco | 4 | 63.4 | 99.0 | +13.4 | 1.5 min |"
    assert table[5] == "| extra | mae | 1 | n/a | n/a | n/a | 5.0 s |"


def test_write_report__markdown_plot_and_recipe(tmp_path: Path) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    stages = [
        StageSummary(
            "moco",
            "grafted_moco",
            2,
            60.0,
            (KNNPoint(1, 0.6, 0.9), KNNPoint(2, 0.7, 0.95)),
        )
    ]
    path = write_report(
        tmp_path,
        title="run `x`",
        description="A test run.",
        floor=KNNPoint(0, 0.5, 0.9),
        stages=stages,
        recipe_yaml="name: x\n",
        knn_setup="kNN setup.",
        seconds=61.0,
    )
    text = path.read_text()
    assert text.startswith("# run `x`\n\nA test run.")
    assert "Total wall time: 1.0 min" in text
    assert (
        "![kNN top-1 per epoch](knn.png)" in text and (tmp_path / "knn.png").is_file()
    )
    assert "```yaml\nname: x\n```" in text
