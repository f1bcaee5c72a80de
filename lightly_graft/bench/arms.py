"""The arms of a suite: their stages (recipe file or inline, suite defaults
merged), LR scaling for the sweep, the (arm, seed, LR factor) jobs and the
sweep's choice."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightly_graft.bench.suite import Suite
from lightly_graft.errors import RecipeError
from lightly_graft.recipes.yaml_io import read_yaml

LR_KEYS = ("base_lr", "stage_lrs", "head_lr")


@dataclass(frozen=True)
class Job:
    """One (arm, seed) at one LR scale."""

    arm: str
    seed: int
    scale: float = 1.0

    @property
    def key(self) -> str:
        return self.arm if self.scale == 1.0 else f"{self.arm}@lr{self.scale:g}"

    def __str__(self) -> str:
        return f"{self.key} seed {self.seed}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_arms(
    suite: Suite, suite_dir: Path, source: str
) -> dict[str, list[dict[str, Any]]]:
    """Every arm's stages (its recipe file's, or inline), with the suite's
    ``defaults`` merged under them."""
    out = {}
    for i, arm in enumerate(suite.arms):
        if arm.recipe is not None:
            path = (suite_dir / arm.recipe).expanduser()  # absolute after loading
            if not path.is_file():
                raise RecipeError(
                    f"{source}: arms[{i}].recipe: '{arm.recipe}' does not exist "
                    f"(looked for {path}); paths are relative to the suite file"
                )
            tree = read_yaml(path)
            stages = tree.get("stages") if isinstance(tree, dict) else None
            if not isinstance(stages, list) or not stages:
                raise RecipeError(
                    f"{source}: arms[{i}].recipe: '{arm.recipe}' has no 'stages' list"
                )
        else:
            stages = list(arm.stages or ())
        out[arm.name] = [
            _merge(_merge(suite.defaults, dict(s)), suite.stage_overrides)
            for s in stages
        ]
    return out


def scale_lrs(
    stages: list[dict[str, Any]], scale: float, *, where: str
) -> list[dict[str, Any]]:
    """The stages with every given LR of their optimizer multiplied by ``scale``."""
    if scale == 1.0:
        return stages
    out = []
    for stage in stages:
        optimizer = dict(stage.get("optimizer") or {})
        if not any(k in optimizer for k in LR_KEYS[:2]):
            raise RecipeError(
                f"{where}: stage '{stage.get('name')}' gives no optimizer.base_lr or "
                "stage_lrs, so the LR sweep has nothing to scale: write its LR into "
                "the stage, or set sweep: false on the arm"
            )
        for key in LR_KEYS:
            value = optimizer.get(key)
            if isinstance(value, list | tuple):
                optimizer[key] = [v * scale for v in value]
            elif value is not None:
                optimizer[key] = value * scale
        out.append({**stage, "optimizer": optimizer})
    return out


def choose_scale(results: dict[float, dict[str, Any]], metric: str) -> float:
    """The scale with the best validation value of ``metric`` (diverged runs lose)."""

    def score(result: dict[str, Any]) -> float:
        if result.get("diverged"):
            return float("-inf")
        details = result["eval_details"]
        if metric == "linear":
            best = details["linear"]["best_lr"]
            return details["linear"]["per_lr"][str(best)]["val_top1"]
        if metric.startswith("fewshot_"):
            shot = details["fewshot"][metric.removeprefix("fewshot_")]
            return shot["per_c"][str(shot["best_c"])]["val_top1"]
        return details["knn"]["val_top1"]

    return max(results, key=lambda x: score(results[x]))
