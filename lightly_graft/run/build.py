"""Resolved recipe sections -> the library objects Lightning trains: the zoo
method, the transforms and ``SSLDataModule``, the ``Grafting`` callback and the
``KNNMonitor``. Code below this layer never sees a recipe.
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
from lightly_graft.methods.transforms import TWO_VIEW_OPTIONS
from lightly_graft.modules.backbone import BackboneSpec
from lightly_graft.recipes.methods import method_args, stage_optimizer
from lightly_graft.recipes.schema import DataConfig, KNNConfig, Recipe, StageConfig
from lightly_graft.recipes.validation import as_lists
from lightly_graft.training.grafting import Grafting
from lightly_graft.training.knn_monitor import KNNMonitor


def backbone_spec(recipe: Recipe) -> BackboneSpec:
    return BackboneSpec(recipe.backbone.name, dict(recipe.backbone.kwargs))


def build_method(recipe: Recipe, stage: StageConfig) -> Any:
    """The zoo method of a stage, randomly initialised (seed before calling)."""
    entry = zoo.get(stage.method)
    return entry.cls(
        batch_size_per_device=stage.batch_size,
        num_classes=0,
        backbone=backbone_spec(recipe),
        optimizer=stage_optimizer(stage),
        **method_args(stage),
    )


def train_transform(data: DataConfig, method: str) -> Any:
    """The stage's per-image views: MAE's crop + flip (one view), the method's
    own with ``augment.preset`` (Masked MoCo/BYOL), MoCo v3's (two views) or the
    method's own with the two-view options (MTL). ``RecipeError``: a preset for
    a method without presets."""
    return _views(data, method, batched=False)


def batch_transform(data: DataConfig, method: str) -> Any:
    """The stage's batched views (:mod:`lightly_graft.data.batched_views`): the
    twins of :func:`train_transform`'s, or None if ``augment.batched`` is off."""
    if not data.augment.batched:
        return None
    return _views(data, method, batched=True)


def _resolved(data: DataConfig) -> tuple[int, dict[str, list[float]]]:
    """The image size and the normalisation (as lists) of a resolved recipe."""
    assert data.image_size is not None and data.normalize is not None, "resolve first"
    return data.image_size, as_lists(data.normalize.model_dump())


def _has_presets(entry: Any) -> bool:
    return "preset" in inspect.signature(entry.transform_factory).parameters


def _views(data: DataConfig, method: str, *, batched: bool) -> Any:
    size, normalize = _resolved(data)
    augment = data.augment
    entry = zoo.get(method)
    factory = entry.batched_transform_factory if batched else entry.transform_factory
    one_view = batched_views.mae_views if batched else mae_transform
    two_views = batched_views.two_views if batched else two_view_transform
    views = getattr(entry.cls, "num_views", 2)
    has_presets = _has_presets(entry)
    if augment.preset is not None and not has_presets:
        with_presets = [e.name for e in zoo.entries() if _has_presets(e)]
        raise RecipeError(
            f"data.augment.preset is '{augment.preset}' but method '{method}' has no "
            f"view presets (methods with presets: {format_options(with_presets)}); "
            "remove the key or use the two-view options (min_scale, cj_strength, ...)."
        )
    common: dict[str, Any] = {"input_size": size, "normalize": normalize}
    if views == 1:
        return one_view(min_scale=augment.mae_min_scale, **common)  # type: ignore[arg-type]
    if has_presets:
        preset = {} if augment.preset is None else {"preset": augment.preset}
        return factory(min_scale=augment.min_scale, **common, **preset)
    two_view = augment.model_dump(include=set(TWO_VIEW_OPTIONS))
    if views == 2:
        return two_views(min_scale=augment.min_scale, **common, **two_view)  # type: ignore[arg-type]
    return factory(
        min_scale=augment.min_scale,
        mae_min_scale=augment.mae_min_scale,
        **common,
        **two_view,
    )


def build_datamodule(recipe: Recipe, stage: StageConfig) -> SSLDataModule:
    """The stage's data: its views (batched, or per-image), plus the shared kNN
    bank/query."""
    data = recipe.data
    size, normalize = _resolved(data)
    views = batch_transform(data, stage.method)
    return SSLDataModule(
        data=data.path or "",
        train_transform=(
            train_transform(data, stage.method)
            if views is None
            else decode_transform(input_size=size)
        ),
        batch_transform=views,
        eval_transform=eval_transform(input_size=size, normalize=normalize),
        batch_size=stage.batch_size,
        seed=recipe.seed,
        **data.library_arguments(),  # kNN set sizes, workers, ...
    )


def knn_monitor(knn: KNNConfig, datamodule: Any, **kwargs: Any) -> KNNMonitor:
    """A ``KNNMonitor`` on the datamodule's kNN bank and queries (k: at most the
    bank's size)."""
    return KNNMonitor(
        datamodule.knn_bank_dataloader(),
        datamodule.knn_query_dataloader(),
        k=min(knn.k, len(datamodule.bank_set)),
        temperature=knn.temperature,
        num_classes=datamodule.num_classes,
        **kwargs,
    )


def build_grafting(stage: StageConfig, checkpoint: Path, format: str) -> Grafting:
    """The ``Grafting`` callback of a stage, from ``checkpoint`` in ``format``;
    the library keys of ``graft`` and ``anchor`` are its other arguments."""
    assert stage.graft is not None
    return Grafting(
        checkpoint=checkpoint,
        format=format,
        num_stages=stage_optimizer(stage).num_stages,
        **stage.graft.library_arguments(),
        **stage.anchor.library_arguments(),
    )
