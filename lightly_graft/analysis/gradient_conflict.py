"""Gradient conflict between MIM and CL per block, over batches (Fig. 1, Fig. 8).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Section 2.2, Eq. 3: the cosine
between the MIM and the CL loss gradients with respect to each block's parameters,
one value per batch; Fig. 1 is a box plot per block with the linear regression of
the medians as a red dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from lightly_graft.analysis.plotting import (
    block_ticks,
    new_figure,
    save_figure,
    wrap,
    write_csv,
)
from lightly_graft.functional.gradients import DEFAULT_TERMS, terms_gradient_cosine

LossTerms = Callable[[Sequence[Tensor]], Mapping[str, Tensor]]


@dataclass(frozen=True)
class GradientConflict:
    """Per-block cosines of one model over several batches.

    Attributes:
        values: Block index -> the cosine of every batch (NaNs dropped: a block
            one loss did not reach).
        terms: The two loss terms compared, e.g. ("mim", "cl").
    """

    values: dict[int, list[float]]
    terms: tuple[str, str] = DEFAULT_TERMS

    def summary(self) -> list[dict[str, float | int]]:
        """One row per block: count, median, quartiles, min, max, mean."""
        rows: list[dict[str, float | int]] = []
        for block, values in sorted(self.values.items()):
            array = np.asarray(values, dtype=np.float64)
            empty = array.size == 0
            q1, median, q3 = (
                (math.nan,) * 3 if empty else np.percentile(array, [25, 50, 75])
            )
            rows.append(
                {
                    "block": block,
                    "count": int(array.size),
                    "median": float(median),
                    "q1": float(q1),
                    "q3": float(q3),
                    "min": math.nan if empty else float(array.min()),
                    "max": math.nan if empty else float(array.max()),
                    "mean": math.nan if empty else float(array.mean()),
                    "fraction_negative": math.nan
                    if empty
                    else float((array < 0).mean()),
                }
            )
        return rows

    def median_regression(self) -> tuple[float, float]:
        """(slope, intercept) of the least-squares line through the block medians."""
        points = [(r["block"], r["median"]) for r in self.summary() if r["count"] > 0]
        if len(points) < 2:
            return math.nan, math.nan
        blocks, medians = zip(*points, strict=True)
        slope, intercept = np.polyfit(np.asarray(blocks, float), np.asarray(medians), 1)
        return float(slope), float(intercept)


def measure_gradient_conflict(
    loss_terms: LossTerms,
    view_batches: Iterable[Sequence[Tensor]],
    params_by_block: Mapping[int, Sequence[Tensor]],
    *,
    terms: tuple[str, str] = DEFAULT_TERMS,
) -> GradientConflict:
    """Eq. 3 per block on each batch.

    Args:
        loss_terms: Maps a batch of views to the loss terms (the MTL method's
            ``loss_terms``); run it in the mode you want to measure (training mode,
            as the paper measures during training).
        view_batches: Batches of views, each a list of (batch_size, C, H, W).
        params_by_block: Block index -> its trainable parameters
            (:func:`lightly_graft.functional.gradients.block_parameters`).
        terms: The two entries of ``loss_terms`` to compare.

    Returns:
        The cosines of every batch, per block.
    """
    values: dict[int, list[float]] = {block: [] for block in params_by_block}
    for views in view_batches:
        cosines = terms_gradient_cosine(loss_terms(views), terms, params_by_block)
        for block, value in cosines.items():
            if not math.isnan(value):
                values[block].append(value)
    return GradientConflict(values=values, terms=terms)


def write_gradient_conflict(
    result: GradientConflict,
    output: Path,
    *,
    title: str,
    stem: str = "gradient_conflict",
    extra_columns: Mapping[str, str] | None = None,
) -> list[Path]:
    """Writes ``{stem}.png`` (Fig. 1), ``{stem}.csv`` and ``{stem}_values.csv``.

    ``{stem}.csv`` has one row per block (count, median, quartiles, ...),
    ``{stem}_values.csv`` one row per block and batch.

    Args:
        result: The measurement.
        output: Directory to write into (created).
        title: Figure title (name the checkpoint, and whether heads are fresh).
        stem: File name stem.
        extra_columns: Constant columns put first in every CSV row (e.g. the
            checkpoint label and where the MTL heads came from).

    Returns:
        The paths written: PNG, summary CSV, long CSV.
    """
    extra = dict(extra_columns or {})
    columns = ["count", "median", "q1", "q3", "min", "max", "mean"]
    summary = write_csv(
        output / f"{stem}.csv",
        ({**extra, **row} for row in result.summary()),
        [*extra, "block", *columns, "fraction_negative"],
    )
    long_rows = (
        {**extra, "block": block, "batch": index, "cosine": value}
        for block, values in sorted(result.values.items())
        for index, value in enumerate(values)
    )
    values = write_csv(
        output / f"{stem}_values.csv", long_rows, [*extra, "block", "batch", "cosine"]
    )
    figure = plot_gradient_conflict(result, title=title)
    png = save_figure(figure, output / f"{stem}.png")
    return [png, summary, values]


def plot_gradient_conflict(result: GradientConflict, *, title: str) -> Figure:
    """Box plot of the cosine per block with the regression of the medians (Fig. 1)."""
    figure = new_figure(width=max(6.0, 0.5 * len(result.values) + 3))
    axes = figure.axes[0]
    blocks = sorted(result.values)
    data = [result.values[b] for b in blocks]
    axes.boxplot(
        data,
        positions=blocks,
        widths=0.6,
        showfliers=True,
        flierprops={"markersize": 3},
        medianprops={"color": "tab:blue"},
    )
    axes.axhline(0.0, color="grey", linewidth=0.8, zorder=0)
    slope, intercept = result.median_regression()
    if not math.isnan(slope):
        xs = np.asarray([blocks[0] - 0.4, blocks[-1] + 0.4])
        axes.plot(
            xs,
            slope * xs + intercept,
            "r--",
            label=f"regression of medians (slope {slope:+.3f}/block)",
        )
    axes.plot([], [], color="tab:blue", label="median, box = quartiles")
    block_ticks(axes, max(blocks) + 1 if blocks else 1)
    axes.set_xlim(min(blocks, default=0) - 0.6, max(blocks, default=0) + 0.6)
    axes.set_ylabel(f"cos(grad {result.terms[0]}, grad {result.terms[1]})")
    count = min((len(v) for v in data), default=0)
    axes.set_title(wrap(f"{title}\n(Eq. 3, {count} batches per block)"), fontsize=10)
    axes.legend(loc="best", fontsize=8)
    return figure
