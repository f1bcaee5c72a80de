"""The random-init floor: kNN accuracy of the untrained stage-0 method, measured
once per run by the same ``KNNMonitor.evaluate``, bank, queries, k and
temperature as during training, so the report's gains compare like with like.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightly_graft.files import write_atomic
from lightly_graft.recipes.schema import Recipe
from lightly_graft.run.build import build_method, knn_monitor
from lightly_graft.run.report import KNNPoint
from lightly_graft.training.devices import resolve_device

FLOOR = "floor.json"


def random_init_floor(
    recipe: Recipe, root: Path, method: Any, datamodule: Any
) -> KNNPoint | None:
    """Measures the floor on ``method`` (None: a fresh stage-0 method) on the
    recipe's device and saves it in ``root/floor.json`` (a resumed run reads it
    back)."""
    path = root / FLOOR
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
