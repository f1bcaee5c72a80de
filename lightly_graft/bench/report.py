"""Tables, claims and figures of a bench directory.

``table.md`` / ``table.csv``: per arm, each metric's mean and standard deviation
over its finished seeds (sample standard deviation, ``ddof=1``; blank with one
seed), the counted training FLOPs and the training time. ``results.json``: the
same plus every per-seed value and the LR sweep. Claims of the paper are checked
on the means: an ``order`` claim holds when every arm beats the next one; its
margin is the smallest gap in units of the two arms' combined standard deviation
``sqrt(std_a^2 + std_b^2)``. Figures: each metric per arm with error bars, the
kNN curves per arm against cumulative FLOPs, and the paper's figures (Fig 1, 3,
6, 7) from the arms' own seed-0 encoders.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightly_graft.bench.suite import METRICS

if TYPE_CHECKING:
    from lightly_graft.bench.runner import Bench

LABELS = {
    "knn": "kNN",
    "linear": "linear",
    "fewshot_1%": "1% few-shot",
    "fewshot_10%": "10% few-shot",
    "finetune": "fine-tune",
}


def _shown(collected: dict[str, Any]) -> list[str]:
    """The metrics any arm has, in METRICS order."""
    present = {m for arm in collected["arms"].values() for m in arm["metrics"]}
    return [m for m in METRICS if m in present]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for one value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def collect(bench: Bench) -> dict[str, Any]:
    """Every finished result of the bench directory, arm by arm."""
    from lightly_graft.bench.runner import Job

    arms: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    suite = bench.suite
    for arm in suite.arms:
        scales = bench.sweep_scales(arm)
        if len(scales) > 1 and suite.lr_sweep is not None:
            runs = {
                x: bench.result(Job(arm.name, suite.lr_sweep.seed, x)) for x in scales
            }
            sweep[arm.name] = {
                f"{x:g}": (r["metrics"] if r else None) for x, r in runs.items()
            }
            if arm.name not in bench.chosen and all(runs.values()):
                from lightly_graft.bench.runner import _choose

                bench.chosen[arm.name] = _choose(
                    {x: r for x, r in runs.items() if r}, suite.lr_sweep.select_by
                )
        try:
            scale = bench.scale_of(arm)
        except RuntimeError:
            continue  # sweep unfinished: no main runs yet
        results = [bench.result(Job(arm.name, s, scale)) for s in suite.seeds_of(arm)]
        finished = [r for r in results if r is not None]
        if not finished:
            continue
        metrics = {}
        for name in METRICS:
            values = [r["metrics"][name] for r in finished if name in r["metrics"]]
            if values:
                mean, std = mean_std(values)
                metrics[name] = {"mean": mean, "std": std, "values": values}
        arms[arm.name] = {
            "title": arm.title or arm.name,
            "paper": arm.paper,
            "lr_scale": scale,
            "seeds": [r["seed"] for r in finished],
            "planned_seeds": list(suite.seeds_of(arm)),
            "diverged": sum(bool(r.get("diverged")) for r in finished),
            "metrics": metrics,
            "flops": finished[0]["flops"],
            "train_minutes": mean_std([r["train_seconds"] / 60 for r in finished])[0],
            "stages": finished[0]["stages"],
            "commits": sorted({r.get("commit", "unknown") for r in finished}),
        }
    return {"arms": arms, "sweep": sweep}


def _cell(metric: dict[str, Any] | None) -> str:
    if metric is None:
        return "-"
    mean, std = metric["mean"], metric["std"]
    return (
        f"{100 * mean:.1f}"
        if math.isnan(std)
        else f"{100 * mean:.1f} ± {100 * std:.1f}"
    )


def table_markdown(collected: dict[str, Any]) -> str:
    shown = _shown(collected)
    lines = [
        "| arm | paper | seeds | "
        + " | ".join(LABELS[m] for m in shown)
        + " | train PFLOP | train min |",
        "|---|---|---:|" + "---:|" * len(shown) + "---:|---:|",
    ]
    for name, arm in collected["arms"].items():
        cells = [_cell(arm["metrics"].get(m)) for m in shown]
        seeds = f"{len(arm['seeds'])}/{len(arm['planned_seeds'])}"
        if arm["diverged"]:
            seeds += f" ({arm['diverged']} diverged)"
        lines.append(
            f"| {arm['title']} (`{name}`) | {arm['paper']} | {seeds} | "
            + " | ".join(cells)
            + f" | {arm['flops'] / 1e15:.3f} | {arm['train_minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def table_csv(collected: dict[str, Any]) -> str:
    shown = _shown(collected)
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["arm", "paper", "lr_scale", "seeds"]
    for m in shown:
        header += [f"{m}_mean", f"{m}_std"]
    writer.writerow([*header, "train_flops", "train_minutes"])
    for name, arm in collected["arms"].items():
        row = [name, arm["paper"], arm["lr_scale"], len(arm["seeds"])]
        for m in shown:
            metric = arm["metrics"].get(m)
            row += [metric["mean"], metric["std"]] if metric else ["", ""]
        writer.writerow([*row, arm["flops"], round(arm["train_minutes"], 3)])
    return out.getvalue()


def check_claims(
    bench: Bench, collected: dict[str, Any], slopes: dict[str, float]
) -> list[dict[str, Any]]:
    """Each claim of the suite against the means: verdict and margin."""
    out = []
    arms = collected["arms"]
    for claim in bench.suite.claims:
        row: dict[str, Any] = {
            "claim": claim.claim,
            "source": claim.source,
            "paper_values": claim.paper_values,
        }
        if claim.kind == "falls_with_depth":
            slope = slopes.get(claim.order[0])
            row.update(
                measured=None
                if slope is None
                else f"slope of the medians {slope:+.4f} per block",
                verdict="not run"
                if slope is None
                else ("reproduced" if slope < 0 else "not reproduced"),
                margin=None,
            )
            out.append(row)
            continue
        metric = claim.metric or ""
        stats = [
            arms.get(name, {}).get("metrics", {}).get(metric) for name in claim.order
        ]
        if any(s is None for s in stats):
            row.update(measured="not all arms finished", verdict="not run", margin=None)
            out.append(row)
            continue
        gaps, noises = [], []
        for a, b in zip(stats, stats[1:], strict=False):
            gaps.append(a["mean"] - b["mean"])  # type: ignore[index]
            noises.append(math.sqrt(a["std"] ** 2 + b["std"] ** 2))  # type: ignore[index]
        measured = " > ".join(
            f"{name} {100 * s['mean']:.1f}"  # type: ignore[index]
            for name, s in zip(claim.order, stats, strict=True)
        )
        holds = all(g > 0 for g in gaps)
        if any(math.isnan(n) or n == 0 for n in noises):
            margin = None  # one seed somewhere: no noise estimate
            verdict = "reproduced (no std: one seed)" if holds else "not reproduced"
        else:
            margin = min(g / n for g, n in zip(gaps, noises, strict=True))
            verdict = (
                ("reproduced" if margin >= 1 else "reproduced within noise")
                if holds
                else "not reproduced"
            )
        row.update(measured=measured, verdict=verdict, margin=margin)
        out.append(row)
    return out


def claims_markdown(claims: list[dict[str, Any]]) -> str:
    lines = [
        "| claim | source | paper | ours | verdict | smallest margin (std) |",
        "|---|---|---|---|---|---:|",
    ]
    for c in claims:
        margin = "-" if c["margin"] is None else f"{c['margin']:+.1f}"
        lines.append(
            f"| {c['claim']} | {c['source']} | {c['paper_values'] or '-'} | "
            f"{c['measured'] or '-'} | {c['verdict']} | {margin} |"
        )
    return "\n".join(lines) + "\n"


def plot_metrics(collected: dict[str, Any], path: Path) -> Path:
    """One panel per metric: mean per arm with std error bars and seed dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(collected["arms"])
    shown = _shown(collected)
    fig, axes = plt.subplots(
        1,
        len(shown),
        figsize=(4 * len(shown), 0.45 * len(names) + 1.5),
        sharey=True,
    )
    for ax, metric in zip(np.atleast_1d(axes), shown, strict=True):
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
    axes_list = np.atleast_1d(axes)
    axes_list[0].set_yticks(
        range(len(names)), [collected["arms"][n]["title"] for n in names]
    )
    axes_list[0].invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_knn_curves(collected: dict[str, Any], path: Path, bench: Bench) -> Path:
    """kNN top-1 per arm (seed mean) against cumulative training FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightly_graft.bench.runner import Job

    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def paper_figures(
    bench: Bench, collected: dict[str, Any]
) -> tuple[list[Path], dict[str, float]]:
    """Fig 1 (gradient conflict), 6 (VIC), 7 (attention distance) and 3 (t-SNE)
    from the arms' encoders of their first finished seed; returns the PNGs and
    the slope of the gradient-conflict medians per arm."""
    from lightly_graft.analysis.run import run_analysis
    from lightly_graft.bench.runner import Job

    figures = bench.suite.figures
    out = bench.root / "figures"
    pngs: list[Path] = []
    slopes: dict[str, float] = {}

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
        written = run_analysis(
            kind,
            [r / stage / "encoder.pt" for _, (r, stage) in runs],
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
        written = run_analysis(
            "gradient-conflict",
            [run / stage / "last.ckpt"],
            data,
            out / "gradient-conflict",
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
                    out / "gradient-conflict" / f"{name}_during_training.png",
                    title=f"{collected['arms'][name]['title']}: cosine during training (Fig 8)",
                )
            )
        for csv_path in written:
            if csv_path.suffix == ".csv" and not csv_path.stem.endswith("_values"):
                rows = list(csv.DictReader(csv_path.open()))
                points = [
                    (int(r["block"]), float(r["median"]))
                    for r in rows
                    if r["median"] not in ("", "nan")
                ]
                if len(points) >= 2:
                    xs, ys = zip(*points, strict=True)
                    slopes[name] = float(np.polyfit(xs, ys, 1)[0])
    return pngs, slopes


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = sorted(per_epoch)
    shown = sorted({epochs[round(i * (len(epochs) - 1) / 3)] for i in range(4)})
    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(bench: Bench, *, figures: bool = True) -> Path:
    """Writes table.md, table.csv, results.json and the figures; returns table.md."""
    from lightly_graft.files import write_atomic

    collected = collect(bench)
    root = bench.root
    pngs: list[Path] = []
    slopes: dict[str, float] = {}
    if collected["arms"]:
        pngs.append(plot_metrics(collected, root / "figures" / "metrics.png"))
        pngs.append(
            plot_knn_curves(collected, root / "figures" / "knn_curves.png", bench)
        )
        if figures:
            extra, slopes = paper_figures(bench, collected)
            pngs += extra
    claims = check_claims(bench, collected, slopes)
    text = [
        f"# Bench `{bench.suite.name}`",
        "",
        bench.suite.description.strip(),
        "",
        "Test top-1 (%) of the final backbone, mean ± std over seeds; LR and C "
        f"chosen on {100 * bench.suite.evaluation.val_fraction:g}% of the training "
        "images held out. FLOPs: counted training FLOPs, step i included.",
        "",
        table_markdown(collected),
    ]
    sweep = bench.suite.lr_sweep
    if collected["sweep"] and sweep is not None:
        text += [f"## LR sweep (seed {sweep.seed})", "", _sweep_markdown(collected), ""]
    if claims:
        text += ["## The paper's claims", "", claims_markdown(claims), ""]
    text += [f"![{p.stem}](figures/{p.relative_to(root / 'figures')})" for p in pngs]
    write_atomic(root / "table.md", "\n".join(text) + "\n")
    write_atomic(root / "table.csv", table_csv(collected))
    write_atomic(
        root / "results.json",
        json.dumps(
            {**collected, "claims": claims, "slopes": slopes}, indent=1, default=float
        )
        + "\n",
    )
    return root / "table.md"


def _sweep_markdown(collected: dict[str, Any]) -> str:
    scales = sorted(
        {s for runs in collected["sweep"].values() for s in runs}, key=float
    )
    lines = [
        "| arm | "
        + " | ".join(f"x{s} (kNN / linear / 1%)" for s in scales)
        + " | chosen |",
        "|---|" + "---|" * len(scales) + "---:|",
    ]
    for name, runs in collected["sweep"].items():
        cells = []
        for s in scales:
            m = runs.get(s)
            cells.append(
                "-"
                if not m
                else " / ".join(
                    f"{100 * m.get(k, math.nan):.1f}"
                    for k in ("knn", "linear", "fewshot_1%")
                )
            )
        chosen = collected["arms"].get(name, {}).get("lr_scale")
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {'-' if chosen is None else f'x{chosen:g}'} |"
        )
    return "\n".join(lines) + "\n"
