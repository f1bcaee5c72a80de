"""The pipeline of ``lightly-graft train``, one pass: ``prepare_run`` loads,
resolves and checks the recipe and claims the run directory; ``run_pipeline``
measures the random-init kNN floor, trains the stages in order (each grafting
from the one before, :mod:`~lightly_graft.run.stage`) and writes ``backbone.pt``,
``backbone.json`` and ``report.md`` (:mod:`~lightly_graft.run.report`). Layout
and resume policy: :mod:`~lightly_graft.run.run_dir`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightly_graft.analysis.run import run_analysis
from lightly_graft.errors import GraftError
from lightly_graft.files import write_atomic
from lightly_graft.recipes.loader import (
    load_recipe,
    recipe_to_yaml,
    save_recipe,
    to_plain,
)
from lightly_graft.recipes.resolve import derived_values, from_library, resolve_recipe
from lightly_graft.recipes.schema import Recipe
from lightly_graft.run.build import build_datamodule, build_method, knn_monitor
from lightly_graft.run.checks import check_run
from lightly_graft.run.lock import DirectoryLock, check_directory
from lightly_graft.run.report import KNNPoint, StageSummary, write_report
from lightly_graft.run.run_dir import RECIPE, RunDirectory
from lightly_graft.run.stage import StageRunner, is_global_zero
from lightly_graft.training.checkpoints import export_timm, load_backbone
from lightly_graft.training.devices import resolve_device


@dataclass(frozen=True)
class RunPlan:
    """A validated run, ready to train."""

    recipe: Recipe
    run_dir: RunDirectory
    resume: bool
    derived: dict[str, Any]
    resolved_yaml: str


@dataclass(frozen=True)
class RunSummary:
    """What a finished run produced."""

    run_dir: Path
    report: Path
    backbone: Path
    floor: KNNPoint | None
    stages: tuple[StageSummary, ...]
    seconds: float


def prepare_run(
    recipe_path: str | Path,
    *,
    overrides: Iterable[str] = (),
    output: str | Path | None = None,
    resume: bool = False,
    check_only: bool = False,
) -> RunPlan:
    """Loads, resolves and checks a recipe and its run directory; trains nothing.
    Raises ``GraftError`` for any problem (recipe, data, checkpoints, folder)."""
    loaded = load_recipe(recipe_path, overrides)
    recipe = resolve_recipe(loaded)
    check_run(recipe, source=f"recipe '{recipe_path}'")
    root = Path(output) if output is not None else Path(recipe.output_dir) / recipe.name
    run_dir = RunDirectory(root)
    derived = {**derived_values(recipe), "from_library": from_library(loaded)}
    if not check_only and is_global_zero():
        check_directory(root)
        # Under DDP, Lightning re-runs this command in the other ranks once rank 0
        # starts training; the folder is rank 0's by then.
        run_dir.prepare(to_plain(recipe), resume=resume)
    return RunPlan(
        recipe=recipe,
        run_dir=run_dir,
        resume=resume,
        derived=derived,
        resolved_yaml=recipe_to_yaml(recipe, derived=derived),
    )


def _analyses(recipe: Recipe, root: Path, encoders: dict[str, Path]) -> list[Path]:
    """Runs ``recipe.analysis`` over every stage's final encoder; returns the
    PNGs. A failed analysis is reported and skipped: the trained run is kept."""
    figures: list[Path] = []
    names = [stage.name for stage in recipe.stages]
    for kind in recipe.analysis:
        try:
            written = run_analysis(
                kind,
                [encoders[name] for name in names],
                recipe.data.path or "default",
                root / "analysis",
                formats="lightly_graft",
                labels=names,
                num_batches=4,
                batch_size=64,
                device=resolve_device(recipe.accelerator),
                seed=recipe.seed,
            )
        except (GraftError, RuntimeError, ValueError) as error:
            print(f"analysis '{kind}' skipped: {error}")
            continue
        figures += [path for path in written if path.suffix == ".png"]
    return figures


def _knn_setup(recipe: Recipe, datamodule: Any) -> str:
    knn = recipe.stages[-1].knn
    bank, query = len(datamodule.bank_set), len(datamodule.query_set)
    data = "Fashion-MNIST" if recipe.data.path == "default" else f"`{recipe.data.path}`"
    return (
        f"Weighted kNN (k={knn.k}, temperature={knn.temperature}) on the backbone's "
        f"pooled feature: {bank} training images as the bank, {query} held-out "
        f"images as queries ({data}). The floor is the same backbone at random "
        "initialisation, measured in this run."
    )


def random_init_floor(
    recipe: Recipe, root: Path, method: Any, datamodule: Any
) -> KNNPoint | None:
    """The random-init floor: kNN accuracy of ``method`` (None: a fresh stage-0
    method) on the recipe's device, with the monitor, bank, queries, k and
    temperature of training, so the report's gains compare like with like.
    Saved in ``root/floor.json``; a resumed run reads it back."""
    path = root / "floor.json"
    if not recipe.random_init_knn:
        return None
    if path.is_file():
        saved = json.loads(path.read_text())
        return KNNPoint(0, saved["top1"], saved["top5"])
    if method is None:  # resumed after stage 0 without a saved floor
        pl.seed_everything(recipe.seed, workers=True, verbose=False)
        method = build_method(recipe, recipe.stages[0])
    monitor = knn_monitor(recipe.stages[0].knn, datamodule)
    original = next(method.parameters()).device
    method.to(resolve_device(recipe.accelerator))
    try:
        result = monitor.evaluate(method)
    finally:
        method.to(original)
    point = KNNPoint(0, result["top1"], result["top5"])
    print(
        f"random-init kNN floor: top-1 {100 * point.top1:.1f}%, top-5 "
        f"{100 * point.top5:.1f}% ({result['seconds']:.0f} s)"
    )
    write_atomic(path, json.dumps({"top1": point.top1, "top5": point.top5}) + "\n")
    return point


def run_pipeline(plan: RunPlan, *, progress_bar: bool = True) -> RunSummary:
    """Trains every stage of a prepared run and writes the backbone and report.

    Rank 0 holds the directory's lock throughout (``DirectoryLockedError`` if
    another process does) and re-applies the resume policy under it. A run that
    fails before writing anything worth keeping removes what it wrote."""
    if not is_global_zero():
        return _run_stages(plan, progress_bar=progress_bar)
    root = plan.run_dir.root
    existed = root.exists()
    with DirectoryLock(root) as lock:
        plan.run_dir.prepare(to_plain(plan.recipe), resume=plan.resume)
        fresh = not plan.run_dir.has_contents()
        try:
            return _run_stages(plan, progress_bar=progress_bar)
        except BaseException:
            if fresh and not plan.run_dir.holds_work():
                plan.run_dir.clear(keep={lock.path.name}, remove_root=not existed)
            raise


def _run_stages(plan: RunPlan, *, progress_bar: bool) -> RunSummary:
    start = time.perf_counter()
    recipe, run_dir, root = plan.recipe, plan.run_dir, plan.run_dir.root
    report, backbone = root / "report.md", root / "backbone.pt"
    runner = StageRunner(recipe, run_dir, plan.derived, progress_bar=progress_bar)
    done = [run_dir.read_done(s.name)[0] is not None for s in recipe.stages]
    if plan.resume and report.is_file() and backbone.is_file() and all(done):
        # Every stage is skipped (its summary read back); nothing is written.
        stages = tuple(runner.run(i, {})[0] for i in range(len(recipe.stages)))
        print(
            f"run '{root}' finished earlier (every stage done, {report.name} written): "
            "nothing to do; nothing was changed"
        )
        return RunSummary(root, report, backbone, None, stages, runner.earlier_seconds)
    if is_global_zero():
        root.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, root / RECIPE, derived=plan.derived)
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    first_data = build_datamodule(recipe, recipe.stages[0])
    first_data.setup()
    # The floor is measured on the very model that stage 0 then trains.
    first = None if done[0] else build_method(recipe, recipe.stages[0])
    floor = (
        random_init_floor(recipe, root, first, first_data) if is_global_zero() else None
    )
    encoders: dict[str, Path] = {}
    summaries = []
    for index, stage in enumerate(recipe.stages):
        built = {"method": first, "datamodule": first_data} if index == 0 else {}
        summary, encoders[stage.name] = runner.run(index, encoders, **built)
        summaries.append(summary)
    if is_global_zero():  # rank 0 writes the backbone and the report
        vit, spec = load_backbone(encoders[recipe.stages[-1].name], "lightly_graft")
        export_timm(backbone, vit, spec)
        write_report(
            root,
            title=f"lightly-graft run `{recipe.name}`",
            description=recipe.description,
            floor=floor,
            stages=summaries,
            recipe_yaml=plan.resolved_yaml,
            knn_setup=_knn_setup(recipe, first_data),
            seconds=time.perf_counter() - start + runner.earlier_seconds,
            figures=_analyses(recipe, root, encoders),
        )
    total = time.perf_counter() - start + runner.earlier_seconds
    return RunSummary(root, report, backbone, floor, tuple(summaries), total)
