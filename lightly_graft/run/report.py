"""The run report: ``report.md`` with the kNN table (floor and each stage's
final top-1/top-5 from its ``metrics.csv``), ``knn.png`` and the recipe.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightly_graft.files import write_atomic

TOP1 = "knn/top1"
TOP5 = "knn/top5"


@dataclass(frozen=True)
class KNNPoint:
    """kNN accuracy (fractions in [0, 1]) after ``epoch`` epochs of a stage."""

    epoch: int
    top1: float
    top5: float


@dataclass(frozen=True)
class StageSummary:
    """What the report shows of one finished stage."""

    name: str
    method: str
    epochs: int
    seconds: float
    history: tuple[KNNPoint, ...] = field(default=())
    #: Images skipped as unreadable (``data.skip_unreadable``).
    unreadable: int = 0

    @property
    def final(self) -> KNNPoint | None:
        return self.history[-1] if self.history else None


def read_knn_history(stage_dir: str | Path) -> tuple[KNNPoint, ...]:
    """kNN points from ``metrics-1.csv``, ... (earlier sessions) and
    ``metrics.csv`` of a stage, a later value for an epoch winning; a value
    logged during 0-based epoch e counts as ``e + 1`` epochs."""
    directory = Path(stage_dir)
    earlier = sorted(
        directory.glob("metrics-*.csv"), key=lambda p: int(p.stem.split("-")[1])
    )
    points: dict[int, KNNPoint] = {}
    for path in [*earlier, directory / "metrics.csv"]:
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                top1, top5 = row.get(TOP1) or "", row.get(TOP5) or ""
                if not top1:
                    continue
                epoch = int(float(row.get("epoch") or 0)) + 1
                points[epoch] = KNNPoint(epoch, float(top1), float(top5 or "nan"))
    return tuple(points[e] for e in sorted(points))


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _minutes(seconds: float) -> str:
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    # Tenths below 10 s: a tiny run's total would otherwise read "0 s".
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def knn_table(floor: KNNPoint | None, stages: Sequence[StageSummary]) -> str:
    """Markdown table: the floor, then each stage's final kNN accuracy."""
    lines = [
        "| | method | epochs | kNN top-1 (%) | kNN top-5 (%) | vs. floor (top-1) | time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    if floor is not None:
        lines.append(
            f"| random init (floor) | - | 0 | {_percent(floor.top1)} | "
            f"{_percent(floor.top5)} | - | - |"
        )
    for stage in stages:
        final = stage.final
        gain = (
            f"{100 * (final.top1 - floor.top1):+.1f}"
            if final is not None and floor is not None
            else "n/a"
        )
        lines.append(
            f"| {stage.name} | {stage.method} | {stage.epochs} | "
            f"{_percent(final.top1 if final else None)} | "
            f"{_percent(final.top5 if final else None)} | {gain} | "
            f"{_minutes(stage.seconds)} |"
        )
    return "\n".join(lines)


def plot_knn(
    floor: KNNPoint | None, stages: Sequence[StageSummary], path: str | Path
) -> Path | None:
    """Plots kNN top-1 against epoch for all stages; None if nothing to plot."""
    if not any(stage.history for stage in stages):
        return None
    from lightly_graft.analysis.plotting import new_figure, save_figure

    figure = new_figure()
    (axes,) = figure.axes
    offset = 0
    for stage in stages:
        epochs = [offset + p.epoch for p in stage.history]
        top1 = [100 * p.top1 for p in stage.history]
        axes.plot(epochs, top1, marker="o", label=f"{stage.name} ({stage.method})")
        offset += stage.epochs
        axes.axvline(offset, color="0.85", linewidth=0.8)
    if floor is not None:
        label = "random init (floor)"
        axes.axhline(100 * floor.top1, color="k", linestyle="--", label=label)
    axes.set(xlabel="epoch (all stages)", ylabel="kNN top-1 (%)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    return save_figure(figure, Path(path))


_BACKBONE = """## Backbone

`backbone.pt` is a plain timm state dict of the final online encoder; \
`backbone.json` holds the timm name and keyword arguments:

```python
import json, timm, torch

spec = json.load(open("backbone.json"))
model = timm.create_model(
    spec["name"], pretrained=False, num_classes=0, **spec["kwargs"]
)
model.load_state_dict(torch.load("backbone.pt", weights_only=True))
```"""


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    description: str,
    floor: KNNPoint | None,
    stages: Sequence[StageSummary],
    recipe_yaml: str,
    knn_setup: str,
    seconds: float,
    figures: Sequence[Path] = (),
) -> Path:
    """Writes ``report.md`` (and ``knn.png``) into ``run_dir``; returns its path.
    ``figures``: analysis PNGs inside ``run_dir``, embedded under "Analysis"."""
    run_dir = Path(run_dir)
    plot = plot_knn(floor, stages, run_dir / "knn.png")
    blocks = [f"# {title}"] + ([description.strip()] if description else [])
    blocks += [
        f"Total wall time: {_minutes(seconds)} over every session of the run "
        "(including the random-init floor and every kNN evaluation).",
        "## kNN accuracy",
        knn_setup,
        knn_table(floor, stages),
    ]
    blocks += [
        f"Stage `{s.name}` skipped {s.unreadable} unreadable images "
        f"(`data.skip_unreadable`; listed in `{s.name}/unreadable.txt`)."
        for s in stages
        if s.unreadable
    ]
    if plot is not None:
        blocks.append(f"![kNN top-1 per epoch]({plot.name})")
    if figures:
        blocks += [
            "## Analysis",
            "Every stage's final encoder on the same held-out images "
            "(`lightly-graft analyze`; numbers in the CSV files beside each figure):",
        ]
        for figure in figures:
            name = figure.stem.replace("_", " ").replace("-", " ")
            blocks.append(f"![{name}]({figure.relative_to(run_dir).as_posix()})")
    blocks += [_BACKBONE, "## Resolved recipe", f"```yaml\n{recipe_yaml.rstrip()}\n```"]
    path = run_dir / "report.md"
    write_atomic(path, "\n\n".join(blocks) + "\n")
    return path
