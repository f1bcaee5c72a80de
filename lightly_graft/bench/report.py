"""Tables and claims of a bench directory (its figures: :mod:`.figures`).

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
    from lightly_graft.bench.bench_dir import Bench

LABELS = {
    "knn": "kNN",
    "linear": "linear",
    "fewshot_1%": "1% few-shot",
    "fewshot_10%": "10% few-shot",
    "finetune": "fine-tune",
}


def shown_metrics(collected: dict[str, Any]) -> list[str]:
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
    from lightly_graft.bench.arms import Job

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
                from lightly_graft.bench.arms import choose_scale

                bench.chosen[arm.name] = choose_scale(
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
    shown = shown_metrics(collected)
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
    shown = shown_metrics(collected)
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
    bench: Bench, collected: dict[str, Any], slopes: dict[str, dict[str, float]]
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
            fit = slopes.get(claim.order[0])
            if fit is None:
                row.update(measured=None, verdict="not run", margin=None)
            else:
                # margin: how many bootstrap std the slope lies below zero
                margin = -fit["slope"] / fit["std"] if fit["std"] > 0 else None
                falls = fit["slope"] < 0
                verdict = "not reproduced"
                if falls:
                    verdict = (
                        "reproduced"
                        if margin is None or margin >= 1
                        else "reproduced within noise"
                    )
                row.update(
                    measured=f"slope of the medians {fit['slope']:+.4f} per block "
                    f"(bootstrap std {fit['std']:.4f})",
                    verdict=verdict,
                    margin=margin,
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


def write_report(bench: Bench, *, figures: bool = True) -> Path:
    """Writes table.md, table.csv, results.json and the figures; returns table.md."""
    from lightly_graft.bench.figures import (
        paper_figures,
        plot_knn_curves,
        plot_metrics,
    )
    from lightly_graft.files import write_atomic

    collected = collect(bench)
    root = bench.root
    pngs: list[Path] = []
    slopes: dict[str, dict[str, float]] = {}
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
