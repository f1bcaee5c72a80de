"""Resolving a recipe: every value that will be used, and where it came from.

``resolve_recipe`` fills in the image size (backbone), normalisation (dataset),
augmentation (``augmentation_defaults``), each stage's optimizer
(``default_optimizer()``) and ``method_args`` (constructor defaults);
:func:`from_library` lists those keys by section, :func:`derived_values` the
global batch sizes and effective LRs. Resolving is idempotent, so a saved
``recipe.yaml`` reruns the same training.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lightly_graft import zoo
from lightly_graft.data import augmentation_defaults, default_normalize
from lightly_graft.functional.schedules import scale_lr
from lightly_graft.recipes.backbone_check import inspect_backbone
from lightly_graft.recipes.methods import method_args, stage_optimizer
from lightly_graft.recipes.schema import (
    Augment,
    DataConfig,
    Normalize,
    OptimizerConfig,
    Recipe,
    StageConfig,
)
from lightly_graft.recipes.validation import as_tuples


def resolve_data(data: DataConfig, *, img_size: int) -> DataConfig:
    """Fills the auto values of the data section for a backbone input size."""
    defaults = as_tuples(augmentation_defaults(img_size))
    given = data.augment.model_dump(exclude_none=True)
    # preset has no size default: None keeps the method's own.
    augment = Augment.model_validate({**defaults, **given})
    normalize = data.normalize or Normalize.model_validate(
        as_tuples(default_normalize(data.path or ""))
    )
    return data.model_copy(
        update={"image_size": img_size, "normalize": normalize, "augment": augment}
    )


def resolve_stage(stage: StageConfig) -> StageConfig:
    """The stage with its full optimizer section and every constructor argument."""
    optimizer = dataclasses.asdict(stage_optimizer(stage))
    if optimizer["stage_lrs"] is not None:
        del optimizer["base_lr"]  # unused beside stage LRs
    return stage.model_copy(
        update={
            "optimizer": OptimizerConfig.model_validate(optimizer),
            "method_args": method_args(stage),
        }
    )


def resolve_recipe(recipe: Recipe) -> Recipe:
    """The recipe with every auto and left-out value replaced by the value that
    will be used."""
    shape = inspect_backbone(recipe.backbone.name, recipe.backbone.kwargs)
    return recipe.model_copy(
        update={
            "data": resolve_data(recipe.data, img_size=shape.img_size),
            "stages": tuple(resolve_stage(s) for s in recipe.stages),
        }
    )


def from_library(recipe: Recipe) -> dict[str, Any]:
    """The keys a loaded (unresolved) recipe leaves to the library, by section:
    ``{"stages[1].optimizer": {"from": "GraftedMoCo.default_optimizer()",
    "keys": [...]}, ...}``."""
    left = {
        "data.augment": (
            "augmentation_defaults(image_size)",
            [k for k, v in recipe.data.augment if v is None and k != "preset"],
        ),
        "data.normalize": (
            "default_normalize(data.path)",
            ["mean", "std"] if recipe.data.normalize is None else [],
        ),
    }
    for i, stage in enumerate(recipe.stages):
        name, resolved = zoo.get(stage.method).cls.__name__, resolve_stage(stage)
        given = stage.optimizer.model_fields_set
        keys = sorted(set(resolved.optimizer.model_fields_set) - given)
        left[f"stages[{i}].optimizer"] = (f"{name}.default_optimizer()", keys)
        keys = sorted(set(resolved.method_args) - set(stage.method_args))
        left[f"stages[{i}].method_args"] = (f"{name}(...) defaults", keys)
    return {
        path: {"from": src, "keys": keys} for path, (src, keys) in left.items() if keys
    }


def derived_values(recipe: Recipe) -> dict[str, Any]:
    """Global batch sizes (per device x devices x nodes x accumulation) and
    effective LRs (``scale_lr``: base LR x global batch / 256, as in the official
    MoCo v3, MAE and Layer Grafted code) per stage of blocks and the head."""
    stages: dict[str, Any] = {}
    for stage in recipe.stages:
        optimizer = stage_optimizer(stage)
        batch = stage.batch_size * recipe.devices * recipe.num_nodes
        batch *= stage.accumulate_grad_batches
        *blocks, head = (
            scale_lr(lr, batch) if optimizer.scale_with_batch_size else lr
            for lr in map(optimizer.stage_base_lr, range(optimizer.num_stages + 1))
        )
        lrs = {f"stage{i}": lr for i, lr in enumerate(blocks)} | {"head": head}
        stages[stage.name] = {"global_batch_size": batch, "effective_lr": lrs}
    return {"lr_rule": "effective LR = base LR x global batch / 256", "stages": stages}
