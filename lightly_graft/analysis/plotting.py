"""Shared figure and CSV helpers for the analysis tools.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure`` saved
through the Agg canvas): no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightly_graft.files import atomic_path

DPI = 150


def new_figure(ncols: int = 1, *, width: float = 6.0, height: float = 4.2) -> Figure:
    """A figure with a 1 x ncols grid of axes (``figure.axes``), Agg canvas attached."""
    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots(1, ncols, squeeze=False)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Writes the figure as PNG and returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Constrained layout places labels from the tick labels of the previous draw;
    # a first draw lets it settle (else long tick labels can overlap axis labels).
    figure.draw_without_rendering()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    return path


def colors(count: int) -> list[Any]:
    """Distinct colours for ``count`` series (tab10, then tab20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def write_csv(
    path: Path, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]
) -> Path:
    """Writes rows (dicts) as CSV with a header; floats with full precision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(fieldnames))
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row))
    return path


def block_ticks(axes: Any, depth: int) -> None:
    """Integer x ticks 0..depth-1 labelled as block indices."""
    step = max(1, depth // 12)
    axes.set_xticks(range(0, depth, step))
    axes.set_xlabel("Block index (0 = lowest)")


def wrap(text: str, width: int = 60) -> str:
    """Wraps a title into lines of at most ``width`` characters (keeps newlines)."""
    return "\n".join(
        "\n".join(textwrap.wrap(line, width)) or line for line in text.split("\n")
    )
