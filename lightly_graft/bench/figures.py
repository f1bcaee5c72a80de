"""Figures of a bench directory: each metric per arm with error bars, kNN
curves against cumulative FLOPs, and the paper's figures (Fig 1, 3, 6, 7 from the
arms' own encoders; Fig 8 from the live GradientConflictMonitor's metrics)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightly_graft.bench.report import LABELS, shown_metrics

if TYPE_CHECKING:
    from lightly_graft.bench.bench_dir import Bench


def plot_metrics(collected: dict[str, Any], path: Path) -> Path:
    """One panel per metric: mean per arm with std error bars and seed dots."""
    from lightly_graft.analysis.plotting import new_figure, save_figure

    names = list(collected["arms"])
    shown = shown_metrics(collected)
    fig = new_figure(len(shown), width=4, height=0.45 * len(names) + 1.5)
    axes = fig.axes
    for ax in axes[1:]:  # one row of arm names, on the left
        ax.sharey(axes[0])
        ax.tick_params(labelleft=False)
    for ax, metric in zip(axes, shown, strict=True):
        for i, name in enumerate(names):
            m = collected["arms"][name]["metrics"].get(metric)
            if m is None:
                continue
            ax.barh(
                i,
                100 * m["mean"],
                xerr=0 if math.isnan(m["std"]) else 100 * m["std"],
                color="C0",
                alpha=0.6,
                capsize=3,
            )
            ax.plot([100 * v for v in m["values"]], [i] * len(m["values"]), "k.", ms=4)
        ax.set_title(LABELS[metric])
        ax.set_xlabel("top-1 (%)")
        values = [
            100 * v
            for n in names
            for v in collected["arms"][n]["metrics"].get(metric, {}).get("values", [])
        ]
        if values:
            ax.set_xlim(max(0, min(values) - 5), min(100, max(values) + 3))
    axes[0].set_yticks(
        range(len(names)), [collected["arms"][n]["title"] for n in names]
    )
    axes[0].invert_yaxis()
    return save_figure(fig, path)


def plot_knn_curves(collected: dict[str, Any], path: Path, bench: Bench) -> Path:
    """kNN top-1 per arm (seed mean) against cumulative training FLOPs."""
    from lightly_graft.analysis.plotting import new_figure, save_figure
    from lightly_graft.bench.arms import Job

    fig = new_figure(width=7, height=4.5)
    ax = fig.axes[0]
    for i, (name, arm) in enumerate(collected["arms"].items()):
        curves = []
        for seed in arm["seeds"]:
            result = bench.result(Job(name, seed, arm["lr_scale"]))
            if result is None:
                continue
            offset = result["flops"] - result["own_flops"]
            xs, ys = [], []
            for stage in result["stages"]:
                per_epoch = stage["flops"] / max(1, stage["epochs"])
                xs += [(offset + e * per_epoch) / 1e15 for e, _ in stage["knn_curve"]]
                ys += [100 * t for _, t in stage["knn_curve"]]
                offset += stage["flops"]
            curves.append((xs, ys))
        if not curves or not curves[0][0]:
            continue
        length = min(len(c[1]) for c in curves)
        mean = np.mean([c[1][:length] for c in curves], axis=0)
        ax.plot(
            curves[0][0][:length],
            mean,
            marker=".",
            label=arm["title"],
            color=f"C{i % 10}",
        )
    ax.set_xlabel("training PFLOP (counted; step i included)")
    ax.set_ylabel("kNN top-1 (%), monitor")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def paper_figures(
    bench: Bench, collected: dict[str, Any]
) -> tuple[list[Path], dict[str, dict[str, float]]]:
    """Fig 1 (gradient conflict), 6 (VIC), 7 (attention distance) and 3 (t-SNE)
    from the arms' encoders of their first finished seed; returns the PNGs and
    the slope of the gradient-conflict medians per arm (:func:`median_slope`)."""
    from lightly_graft.analysis.run import run_analysis
    from lightly_graft.bench.arms import Job

    figures = bench.suite.figures
    out = bench.root / "figures"
    pngs: list[Path] = []
    slopes: dict[str, dict[str, float]] = {}

    def run_of(name: str) -> tuple[Path, str] | None:
        arm = collected["arms"].get(name)
        if arm is None:
            return None
        job = Job(name, arm["seeds"][0], arm["lr_scale"])
        return bench.run_dir(job), arm["stages"][-1]["name"]

    data = (
        bench.suite.data
        if isinstance(bench.suite.data, str)
        else bench.suite.data.get("path", "default")
    )
    common = {
        "num_batches": figures.num_batches,
        "batch_size": figures.batch_size,
        "seed": 0,
    }
    for kind, names in (
        ("vic", figures.vic),
        ("attention-distance", figures.attention_distance),
        ("tsne", figures.tsne),
    ):
        runs = [(n, r) for n in names if (r := run_of(n)) is not None]
        if not runs:
            continue
        encoders = [r / stage / "encoder.pt" for _, (r, stage) in runs]
        if not all(e.is_file() for e in encoders):
            pngs += _kept(out / kind, [e for e in encoders if not e.is_file()])
            continue
        written = run_analysis(
            kind,
            encoders,
            data,
            out / kind,
            formats="lightly_graft",
            labels=[collected["arms"][n]["title"] for n, _ in runs],
            **common,  # type: ignore[arg-type]
        )
        pngs += [p for p in written if p.suffix == ".png"]
    for name in figures.gradient_conflict:
        found = run_of(name)
        if found is None:
            continue
        run, stage = found
        folder, checkpoint = out / "gradient-conflict", run / stage / "last.ckpt"
        if checkpoint.is_file():
            written = run_analysis(
                "gradient-conflict",
                [checkpoint],
                data,
                folder,
                formats="lightning",
                labels=[name],
                **common,  # type: ignore[arg-type]
            )
            pngs += [p for p in written if p.suffix == ".png"]
            live = conflict_during_training(run / stage)
            if live:
                pngs.append(
                    plot_conflict_during_training(
                        live,
                        folder / f"{name}_during_training.png",
                        title=f"{collected['arms'][name]['title']}: cosine during training (Fig 8)",
                    )
                )
        else:  # an earlier report's figures and values (Fig 8 among them)
            pngs += _kept(folder, [checkpoint])
            written = sorted(folder.glob("*_values.csv")) if folder.is_dir() else []
        values = [p for p in written if p.name.endswith("_values.csv")]
        if values:
            fit = median_slope(values[0])
            if fit is not None:
                slopes[name] = fit
    return pngs, slopes


def _kept(folder: Path, missing: list[Path]) -> list[Path]:
    """The PNGs an earlier report wrote to ``folder``, kept (with a note) when
    the checkpoints a figure needs are gone: a published bench directory holds
    results and figures, not every checkpoint."""
    kept = sorted(folder.glob("*.png")) if folder.is_dir() else []
    gone = ", ".join(str(p) for p in missing)
    print(
        f"bench: {folder.name}: {'keeping the figures of an earlier report' if kept else 'no figure'}"
        f" ({gone} not found)",
        flush=True,
    )
    return kept


def median_slope(
    values_csv: Path, resamples: int = 1000, seed: int = 0
) -> dict[str, float] | None:
    """Fig 1's regression line: the least-squares slope of the per-block median
    cosines, and its noise: the standard deviation of that slope over bootstrap
    resamples of the measured batches (drawn with replacement within each
    block). None with fewer than two blocks."""
    cosines: dict[int, list[float]] = {}
    for row in csv.DictReader(values_csv.open()):
        if row["cosine"] not in ("", "nan"):
            cosines.setdefault(int(row["block"]), []).append(float(row["cosine"]))
    if len(cosines) < 2:
        return None
    blocks = sorted(cosines)
    samples = [np.asarray(cosines[b]) for b in blocks]
    slope = float(np.polyfit(blocks, [np.median(v) for v in samples], 1)[0])
    generator = np.random.default_rng(seed)
    medians = np.stack(
        [
            np.median(generator.choice(v, size=(resamples, len(v))), axis=1)
            for v in samples
        ],
        axis=1,
    )  # (resamples, blocks)
    fits = np.polyfit(blocks, medians.T, 1)[0]
    return {"slope": slope, "std": float(np.std(fits, ddof=1))}


def conflict_during_training(stage_dir: Path) -> dict[int, dict[int, float]]:
    """Median logged ``grad_conflict/block_i`` per epoch and block of a stage
    trained with the live GradientConflictMonitor (its metrics CSV files)."""
    values: dict[int, dict[int, list[float]]] = {}
    for path in sorted(stage_dir.glob("metrics*.csv")):
        for row in csv.DictReader(path.open()):
            for key, value in row.items():
                if key.startswith("grad_conflict/block_") and value not in ("", None):
                    epoch = int(float(row.get("epoch") or 0))
                    block = int(key.rsplit("_", 1)[1])
                    values.setdefault(epoch, {}).setdefault(block, []).append(
                        float(value)
                    )
    return {
        epoch: {block: float(np.median(v)) for block, v in sorted(blocks.items())}
        for epoch, blocks in sorted(values.items())
    }


def plot_conflict_during_training(
    per_epoch: dict[int, dict[int, float]], path: Path, *, title: str
) -> Path:
    """Fig 8: the MIM/CL gradient cosine per block at several epochs of training."""
    from lightly_graft.analysis.plotting import new_figure, save_figure

    epochs = sorted(per_epoch)
    shown = sorted({epochs[round(i * (len(epochs) - 1) / 3)] for i in range(4)})
    fig = new_figure(width=6, height=4)
    ax = fig.axes[0]
    for i, epoch in enumerate(shown):
        blocks = per_epoch[epoch]
        ax.plot(
            list(blocks),
            list(blocks.values()),
            marker="o",
            color=f"C{i}",
            label=f"epoch {epoch + 1}",
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("block")
    ax.set_ylabel("median cos(grad MIM, grad CL)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
