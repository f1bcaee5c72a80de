"""``run_suite``: every (arm, seed) of a suite trained, evaluated and tabulated.

The bench directory::

    <output>/suite.yaml                 the resolved suite (arm recipes inlined)
    <output>/runs/<arm>[@lrX]/seed<N>/  a `lightly-graft train` run directory
    <output>/results/<arm>[@lrX]/seed<N>.json   a finished (arm, seed)
    <output>/costs.json                 counted FLOPs per step of every stage
    <output>/fewshot_subsets.json       the labelled subsets every arm shares
    <output>/table.md, table.csv, results.json, figures/

Order: the LR sweep first (every sweeping arm on the sweep's seed at every
scale, in dependency order; the best scale by the validation metric is kept),
then seed by seed, every arm at its chosen scale. An arm's dependencies
(``graft_from``, ``budget.match``) run first, same seed. Resume: a result file
means the (arm, seed) is finished and is never rerun; a run directory without
one continues where it stopped (``train --resume``); a changed suite is refused
naming the keys that differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightly_graft.bench.arms import Job, choose_scale, resolve_arms
from lightly_graft.bench.bench_dir import SUITE, Bench, BenchExistsError
from lightly_graft.bench.budget import total_flops
from lightly_graft.bench.jobs import run_job
from lightly_graft.bench.suite import Arm, Suite, dependencies, load_suite
from lightly_graft.errors import RecipeError
from lightly_graft.run.lock import DirectoryLock


def _order(suite: Suite, only: Sequence[str] | None) -> list[Arm]:
    """Arms in dependency order (dependencies first), limited to ``only`` and
    what it needs."""
    wanted = set(only) if only else {a.name for a in suite.arms}
    for name in list(wanted):
        wanted |= set(dependencies(suite, suite.arm(name)))
    out: list[Arm] = []

    def visit(arm: Arm) -> None:
        if arm in out:
            return
        for dep in reversed(dependencies(suite, arm)):
            visit(suite.arm(dep))
        out.append(arm)

    for arm in suite.arms:
        if arm.name in wanted:
            visit(arm)
    return out


def run_suite(
    path: str | Path,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    only: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    progress_bar: bool = False,
    check_only: bool = False,
) -> Path:
    """Runs a suite file (see the module docstring); returns the bench directory."""
    from lightly_graft.bench.report import write_report

    source = f"suite '{path}'"
    suite = load_suite(path)
    names = [a.name for a in suite.arms]
    for name in only or ():
        if name not in names:
            from lightly_graft.errors import did_you_mean, format_options

            raise RecipeError(
                f"--only {name}: not an arm of {source}{did_you_mean(name, names)}; "
                f"arms: {format_options(names)}"
            )
    stages = resolve_arms(suite, Path(path).parent, source)
    root = Path(output) if output is not None else Path("runs") / "bench" / suite.name
    bench = Bench(suite, source, stages, root, progress_bar=progress_bar)
    bench.check()
    if check_only:
        return root
    with DirectoryLock(root, "bench directory"):
        bench.prepare(resume=resume)
        _run_jobs(bench, suite, only, seeds)
        write_report(bench)
    return root


def _flops_left(
    bench: Bench, suite: Suite, arms: Sequence[Arm], seeds: Sequence[int]
) -> float:
    """Training FLOPs of the jobs without a result (the progress line's "left"):
    the sweep's scales on its seed, and every other seed at whichever scale."""
    sweep = suite.lr_sweep
    any_scale = {1.0, *(sweep.scales if sweep is not None else ())}
    total = 0.0
    for arm in arms:
        per_job = sum(total_flops(bench.own_stages(arm), bench.stage_costs(arm)))
        scales = bench.sweep_scales(arm)
        for seed in suite.seeds_of(arm):
            if seed not in seeds:
                continue
            if len(scales) > 1 and sweep is not None and seed == sweep.seed:
                jobs = [Job(arm.name, seed, x) for x in scales]
                total += per_job * sum(bench.result(j) is None for j in jobs)
            elif all(bench.result(Job(arm.name, seed, x)) is None for x in any_scale):
                total += per_job
    return total


def _run_jobs(
    bench: Bench,
    suite: Suite,
    only: Sequence[str] | None,
    seeds: Sequence[int] | None,
) -> None:
    """Runs the LR sweeps, then every arm x seed (dependencies first)."""
    arms = _order(suite, only)
    all_seeds = sorted({s for a in arms for s in suite.seeds_of(a)})
    if seeds is not None:
        all_seeds = [s for s in all_seeds if s in set(seeds)]
    sweep = suite.lr_sweep
    jobs_flops = _flops_left(bench, suite, arms, all_seeds)
    done: list[float] = []
    for arm in arms:  # the LR sweep, dependencies first
        scales = bench.sweep_scales(arm)
        if len(scales) > 1 and sweep is not None:
            results = {
                x: run_job(
                    bench,
                    Job(arm.name, sweep.seed, x),
                    plan_total=jobs_flops,
                    plan_done=done,
                )
                for x in scales
            }
            bench.chosen[arm.name] = choose_scale(results, sweep.select_by)
            print(
                f"bench: LR sweep of {arm.name}: scale {bench.chosen[arm.name]:g} chosen by val {sweep.select_by}",
                flush=True,
            )
    for seed in all_seeds:
        for arm in arms:
            if seed in suite.seeds_of(arm):
                run_job(
                    bench,
                    Job(arm.name, seed, bench.scale_of(arm)),
                    plan_total=jobs_flops,
                    plan_done=done,
                )


def report_only(path: str | Path, *, output: str | Path | None = None) -> Path:
    """Rewrites the tables and figures of an existing bench directory from its
    finished results; trains nothing."""
    from lightly_graft.bench.report import write_report

    source = f"suite '{path}'"
    suite = load_suite(path)
    stages = resolve_arms(suite, Path(path).parent, source)
    root = Path(output) if output is not None else Path("runs") / "bench" / suite.name
    bench = Bench(suite, source, stages, root)
    if not (root / SUITE).is_file():
        raise BenchExistsError(
            f"'{root}' is not a bench directory (no {SUITE}): run the suite first, "
            "or give its --output"
        )
    bench.prepare(resume=True)
    return write_report(bench)
