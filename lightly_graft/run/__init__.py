"""Running a recipe: load -> resolve -> check inputs -> run -> report.

``prepare_run`` validates everything up front and claims the run directory;
``run_pipeline`` measures the random-init kNN floor, trains the stages in order
(:mod:`~lightly_graft.run.stage`) and writes the report
(:mod:`~lightly_graft.run.report`). The run directory and its resume policy:
:mod:`~lightly_graft.run.run_dir`.
"""

from __future__ import annotations

from lightly_graft.run.pipeline import RunPlan, RunSummary, prepare_run, run_pipeline
from lightly_graft.run.report import KNNPoint, StageSummary
from lightly_graft.run.run_dir import RunDirectory, RunExistsError, differing_keys

__all__ = [
    "KNNPoint",
    "RunDirectory",
    "RunExistsError",
    "RunPlan",
    "RunSummary",
    "StageSummary",
    "differing_keys",
    "prepare_run",
    "run_pipeline",
]
