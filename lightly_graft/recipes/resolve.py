"""Resolving a recipe: auto values filled in, derived values computed.

``resolve_recipe`` replaces every "auto" (None) value of the data section with
the value that will be used: the image size from the backbone, the dataset's
normalisation, the augmentation defaults for that image size
(:func:`lightly_graft.data.augmentation_defaults`). Resolving a resolved recipe
changes nothing, so the ``recipe.yaml`` saved beside a checkpoint reruns the
same training.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lightly_graft.data import augmentation_defaults, default_normalize
from lightly_graft.functional.schedules import scale_lr
from lightly_graft.recipes.backbone_check import inspect_backbone
from lightly_graft.recipes.build import stage_optimizer
from lightly_graft.recipes.schema import (
    Augment,
    DataConfig,
    Normalize,
    Recipe,
    StageConfig,
)


def resolve_data(data: DataConfig, *, img_size: int) -> DataConfig:
    """Fills the auto values of the data section for a backbone input size."""
    defaults = augmentation_defaults(img_size)
    values: dict[str, Any] = {
        f.name: (
            getattr(data.augment, f.name)
            if getattr(data.augment, f.name) is not None
            # preset has no size default: None keeps the method's own.
            else _as_field(defaults.get(f.name))
        )
        for f in dataclasses.fields(Augment)
    }
    augment = Augment(**values)
    normalize = data.normalize
    if normalize is None:
        stats = default_normalize(data.path or "")
        normalize = Normalize(mean=tuple(stats["mean"]), std=tuple(stats["std"]))  # type: ignore[arg-type]
    return dataclasses.replace(
        data, image_size=img_size, normalize=normalize, augment=augment
    )


def _as_field(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


def resolve_recipe(recipe: Recipe) -> Recipe:
    """The recipe with every auto value replaced by the value that will be used."""
    shape = inspect_backbone(recipe.backbone.name, recipe.backbone.kwargs)
    data = resolve_data(recipe.data, img_size=shape.img_size)
    return dataclasses.replace(recipe, data=data)


def global_batch_size(recipe: Recipe, stage: StageConfig) -> int:
    """Batch per device x devices x nodes x gradient accumulation."""
    return (
        stage.batch_size
        * recipe.devices
        * recipe.num_nodes
        * stage.accumulate_grad_batches
    )


def derived_values(recipe: Recipe) -> dict[str, Any]:
    """Values computed from the recipe: global batch sizes and effective LRs.

    Effective LR = base LR x global batch / 256 (``scale_lr``, the rule of the
    official MoCo v3, MAE and Layer Grafted code), per stage of blocks and for
    the head (everything above the blocks).
    """
    stages: dict[str, Any] = {}
    for stage in recipe.stages:
        optimizer = stage_optimizer(stage.optimizer)
        batch = global_batch_size(recipe, stage)
        count = stage.optimizer.num_stages
        lrs = {
            f"stage{i}": scale_lr(optimizer.stage_base_lr(i), batch)
            for i in range(count)
        }
        lrs["head"] = scale_lr(optimizer.stage_base_lr(count), batch)
        stages[stage.name] = {"global_batch_size": batch, "effective_lr": lrs}
    return {"lr_rule": "effective LR = base LR x global batch / 256", "stages": stages}
