"""From a resolved recipe stage to the objects Lightning trains.

Everything here takes the typed recipe sections and returns library objects:
the zoo method with its ``GraftedStageOptimizer``, the stage's transforms and
``SSLDataModule``, and the ``Grafting`` callback. Code below this layer never
sees a recipe.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from lightly_graft import zoo
from lightly_graft.data import (
    SSLDataModule,
    batched_views,
    decode_transform,
    eval_transform,
    mae_transform,
    two_view_transform,
)
from lightly_graft.errors import RecipeError, format_options
from lightly_graft.modules.backbone import BackboneSpec
from lightly_graft.recipes.schema import (
    DataConfig,
    GraftConfig,
    OptimizerConfig,
    Recipe,
    StageConfig,
)
from lightly_graft.training.grafting import Grafting
from lightly_graft.training.optimizer import GraftedStageOptimizer


def backbone_spec(recipe: Recipe) -> BackboneSpec:
    return BackboneSpec(recipe.backbone.name, dict(recipe.backbone.kwargs))


def stage_optimizer(config: OptimizerConfig) -> GraftedStageOptimizer:
    """The ``GraftedStageOptimizer`` of a recipe's optimizer section."""
    base = config.base_lr if config.base_lr is not None else config.stage_lrs[-1]  # type: ignore[index]
    return GraftedStageOptimizer(
        name=config.name,
        base_lr=base,
        stage_lrs=config.stage_lrs,
        head_lr=config.head_lr,
        num_stages=config.num_stages,
        frozen_stages=config.frozen_stages,
        weight_decay=config.weight_decay,
        betas=config.betas,
        momentum=config.momentum,
        warmup_epochs=config.warmup_epochs,
        end_lr_scale=config.min_lr_ratio,
    )


def build_method(recipe: Recipe, stage: StageConfig, *, num_classes: int = 0) -> Any:
    """The zoo method of a stage, randomly initialised (seed before calling)."""
    entry = zoo.get(stage.method)
    return entry.cls(
        batch_size_per_device=stage.batch_size,
        num_classes=num_classes,
        backbone=backbone_spec(recipe),
        optimizer=stage_optimizer(stage.optimizer),
        **stage.method_args,
    )


def train_transform(data: DataConfig, method: str) -> Any:
    """The stage's per-image view transform (lightly's transforms).

    One view: MAE's crop + flip. A method whose ``make_transform`` has view
    presets (Masked MoCo/BYOL): its own, with ``augment.preset``. Two views: MoCo
    v3's (BYOL's) views. More (MTL): the method's own, with the two-view options.

    Raises:
        RecipeError: ``augment.preset`` is set for a method without presets.
    """
    return _views(data, method, batched=False)


def batch_transform(data: DataConfig, method: str) -> Any:
    """The stage's batched views (:mod:`lightly_graft.data.batched_views`): the
    twins of :func:`train_transform`'s, or None if ``augment.batched`` is off."""
    if not data.augment.batched:
        return None
    return _views(data, method, batched=True)


def _views(data: DataConfig, method: str, *, batched: bool) -> Any:
    assert data.image_size is not None and data.normalize is not None, "resolve first"
    normalize = {"mean": list(data.normalize.mean), "std": list(data.normalize.std)}
    augment = data.augment
    entry = zoo.get(method)
    factory = entry.batched_transform_factory if batched else entry.transform_factory
    one_view = batched_views.mae_views if batched else mae_transform
    two_views = batched_views.two_views if batched else two_view_transform
    views = getattr(entry.cls, "num_views", 2)
    has_presets = "preset" in inspect.signature(entry.transform_factory).parameters
    if augment.preset is not None and not has_presets:
        with_presets = [
            e.name
            for e in zoo.entries()
            if "preset" in inspect.signature(e.transform_factory).parameters
        ]
        raise RecipeError(
            f"data.augment.preset is '{augment.preset}' but method '{method}' has no "
            f"view presets (methods with presets: {format_options(with_presets)}); "
            "remove the key or use the two-view options (min_scale, cj_strength, ...)."
        )
    if views == 1:
        return one_view(
            input_size=data.image_size,
            min_scale=augment.mae_min_scale,  # type: ignore[arg-type]
            normalize=normalize,
        )
    if has_presets:
        preset = {} if augment.preset is None else {"preset": augment.preset}
        return factory(
            input_size=data.image_size,
            min_scale=augment.min_scale,
            normalize=normalize,
            **preset,
        )
    two_view: dict[str, Any] = {
        "cj_strength": augment.cj_strength,
        "blur_probs": augment.blur_probs,
        "blur_sigmas": augment.blur_sigmas,
        "solarize_prob": augment.solarize_prob,
        "hflip_prob": augment.hflip_prob,
    }
    if views == 2:
        return two_views(
            input_size=data.image_size,
            min_scale=augment.min_scale,  # type: ignore[arg-type]
            normalize=normalize,
            **two_view,
        )
    return factory(
        input_size=data.image_size,
        min_scale=augment.min_scale,
        mae_min_scale=augment.mae_min_scale,
        normalize=normalize,
        **two_view,
    )


def build_datamodule(recipe: Recipe, stage: StageConfig) -> SSLDataModule:
    """The stage's data: its views (batched, or per-image), plus the shared kNN
    bank/query."""
    data = recipe.data
    assert data.image_size is not None and data.normalize is not None, "resolve first"
    normalize = {"mean": list(data.normalize.mean), "std": list(data.normalize.std)}
    views = batch_transform(data, stage.method)
    return SSLDataModule(
        data=data.path or "",
        train_transform=(
            train_transform(data, stage.method)
            if views is None
            else decode_transform(input_size=data.image_size)
        ),
        batch_transform=views,
        eval_transform=eval_transform(input_size=data.image_size, normalize=normalize),
        batch_size=stage.batch_size,
        eval_batch_size=data.eval_batch_size,
        num_workers=data.num_workers,
        knn_bank_size=data.knn_bank_size,
        knn_query_size=data.knn_query_size,
        holdout_fraction=data.holdout_fraction,
        seed=recipe.seed,
    )


def build_grafting(
    stage: StageConfig, graft: GraftConfig, checkpoint: Path, format: str
) -> Grafting:
    """The ``Grafting`` callback of a stage, from ``checkpoint`` in ``format``."""
    return Grafting(
        checkpoint=checkpoint,
        format=format,
        num_blocks=graft.num_blocks,
        anchor_weight=stage.anchor.weight,
        anchor_p=stage.anchor.p,
        anchor_blocks=stage.anchor.num_blocks,
        num_stages=stage.optimizer.num_stages,
        freeze_epochs=graft.freeze_epochs,
        allow_partial=graft.allow_partial,
    )
