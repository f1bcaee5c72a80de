"""Training and evaluating one (arm, seed) job of a bench directory: its
dependencies first, the result file, the progress line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightly_graft.bench.arms import Job
from lightly_graft.bench.bench_dir import Bench
from lightly_graft.bench.budget import total_flops
from lightly_graft.bench.evaluate import evaluate, finite
from lightly_graft.files import write_atomic
from lightly_graft.recipes.yaml_io import dump_yaml
from lightly_graft.run.report import StageSummary
from lightly_graft.training.devices import resolve_device
from lightly_graft.training.divergence import DivergenceError


def run_job(
    bench: Bench, job: Job, *, plan_total: float, plan_done: list[float]
) -> dict[str, Any]:
    """Trains and evaluates one job (its dependencies first); returns its result."""
    done = bench.result(job)
    if done is not None:
        return done
    arm = bench.suite.arm(job.arm)
    if arm.graft_from is not None:
        source = bench.suite.arm(arm.graft_from)
        run_job(
            bench,
            Job(source.name, job.seed, bench.scale_of(source)),
            plan_total=plan_total,
            plan_done=plan_done,
        )
    result = _train_and_evaluate(bench, job)
    _progress(bench, job, result, plan_total, plan_done)
    return result


def _train_and_evaluate(bench: Bench, job: Job) -> dict[str, Any]:
    from lightly_graft.run.pipeline import prepare_run, run_pipeline

    tree = bench.tree(job)
    run_dir = bench.run_dir(job)
    recipe_path = bench.root / "runs" / job.key / f"seed{job.seed}.yaml"
    write_atomic(
        recipe_path,
        dump_yaml(tree, header=f"Recipe of {job} (lightly-graft bench)."),
    )
    start = time.perf_counter()
    print(f"bench: {job}: training in {run_dir}", flush=True)
    plan = prepare_run(recipe_path, output=run_dir, resume=run_dir.exists())
    try:
        summary = run_pipeline(plan, progress_bar=bench.progress_bar)
    except DivergenceError as error:
        return _record_diverged(bench, job, error, time.perf_counter() - start)
    train_seconds = time.perf_counter() - start
    from lightly_graft.training.checkpoints import load_backbone

    last = plan.recipe.stages[-1].name
    vit, _ = load_backbone(run_dir / last / "encoder.pt", "lightly_graft")
    record = _record(bench, job, tree, summary.stages, train_seconds)
    stats = plan.recipe.data.normalize
    normalize = {"mean": list(stats.mean), "std": list(stats.std)}  # type: ignore[union-attr]
    if not finite(vit):
        record.update(diverged=True, metrics={}, eval_seconds=0.0)
        print(
            f"bench: {job}: the backbone has non-finite weights (diverged); recorded as such",
            file=sys.stderr,
        )
    else:
        device = resolve_device(bench.suite.accelerator)
        evaluated = evaluate(
            vit,
            str(plan.recipe.data.path),
            normalize,
            bench.suite.evaluation,
            device=device,
            workdir=bench.root,
        )
        record.update(
            diverged=False,
            metrics=evaluated["metrics"],
            eval_details=evaluated["details"],
            eval_seconds=evaluated["seconds"],
        )
    write_atomic(bench.result_path(job), json.dumps(record, indent=1) + "\n")
    return record


def _record(
    bench: Bench,
    job: Job,
    tree: dict[str, Any],
    summaries: Sequence[StageSummary] | None,
    train_seconds: float,
) -> dict[str, Any]:
    """A job's result without its metrics; ``summaries`` None: it diverged."""
    arm = bench.suite.arm(job.arm)
    stages = tree["stages"]
    costs = bench.stage_costs(arm)
    flops = total_flops(bench.own_stages(arm), costs)
    return {
        "arm": job.arm,
        "seed": job.seed,
        "lr_scale": job.scale,
        "stages": [
            {
                "name": s["name"],
                "method": s["method"],
                "epochs": s["epochs"],
                "limit_train_batches": s.get("limit_train_batches"),
                "flops_per_step": c.flops_per_step,
                "steps": c.steps(int(s["epochs"]), s.get("limit_train_batches")),
                "flops": f,
                "seconds": st.seconds if st is not None else 0.0,
                "knn_curve": (
                    [[p.epoch, p.top1] for p in st.history] if st is not None else []
                ),
            }
            for s, c, f, st in zip(
                stages,
                costs,
                flops,
                summaries if summaries is not None else [None] * len(stages),
                strict=True,
            )
        ],
        "flops": sum(flops) + bench.step_i_flops(arm),
        "own_flops": sum(flops),
        "train_seconds": train_seconds,
        "commit": _commit(),
    }


def _record_diverged(
    bench: Bench, job: Job, error: DivergenceError, seconds: float
) -> dict[str, Any]:
    """The result of a job whose training stopped on a non-finite loss."""
    record = _record(bench, job, bench.tree(job), None, seconds)
    record.update(diverged=True, metrics={}, eval_seconds=0.0)
    print(f"bench: {job}: {error}; recorded as diverged", file=sys.stderr)
    write_atomic(bench.result_path(job), json.dumps(record, indent=1) + "\n")
    return record


def _progress(
    bench: Bench,
    job: Job,
    result: dict[str, Any],
    plan_total: float,
    plan_done: list[float],
) -> None:
    seconds = result["train_seconds"] + result["eval_seconds"]
    bench._session.append((seconds, float(result["own_flops"])))
    plan_done.append(float(result["own_flops"]))
    metrics = result["metrics"]
    shown = " ".join(f"{k} {100 * v:.1f}" for k, v in metrics.items()) or "diverged"
    rate = sum(s for s, _ in bench._session) / max(
        1.0, sum(f for _, f in bench._session)
    )
    left = max(0.0, plan_total - sum(plan_done)) * rate
    print(
        f"bench: done {job}: {shown} | {result['own_flops'] / 1e12:.2f} TFLOP, "
        f"{seconds / 60:.1f} min | about {left / 3600:.1f} h left",
        flush=True,
    )


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
