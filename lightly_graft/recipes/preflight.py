"""Everything checked before the first training step of a run.

1. The recipe's files: data path and graft checkpoints exist and are readable
   (:mod:`~lightly_graft.recipes.inputs`).
2. Every stage's method can be built with its ``method_args`` (built on the
   ``meta`` device: no memory, about a second even for ViT-L), and its view
   transform with the ``data.augment`` options.
3. Every checkpoint named by a ``graft`` section is read in its named format and
   its grafted keys and shapes are checked against the backbone.

A problem is a ``RecipeError`` (or the ``CheckpointError`` of the checkpoint
reader) naming the recipe key; nothing has been written or trained by then.
"""

from __future__ import annotations

import torch

from lightly_graft.errors import CheckpointError, GraftError, RecipeError
from lightly_graft.modules.backbone import build_vit
from lightly_graft.recipes.build import (
    backbone_spec,
    batch_transform,
    build_method,
    train_transform,
)
from lightly_graft.recipes.inputs import check_inputs
from lightly_graft.recipes.schema import Recipe
from lightly_graft.training.checkpoints import describe_mismatch, load_encoder_state
from lightly_graft.training.grafting import match_graft


def check_methods_build(recipe: Recipe, *, source: str) -> None:
    """Builds every stage's method on the meta device; errors name the stage."""
    for i, stage in enumerate(recipe.stages):
        try:
            with torch.device("meta"):
                build_method(recipe, stage)
        except (GraftError, ValueError, TypeError) as error:
            raise RecipeError(
                f"{source}: stages[{i}] ('{stage.method}'): the method cannot be "
                f"built with method_args {stage.method_args}: {error}"
            ) from None


def check_transforms(recipe: Recipe, *, source: str) -> None:
    """Builds every stage's view transform; errors name the stage."""
    for i, stage in enumerate(recipe.stages):
        try:
            train_transform(recipe.data, stage.method)
            batch_transform(recipe.data, stage.method)
        except (GraftError, ValueError, TypeError) as error:
            raise RecipeError(
                f"{source}: stages[{i}] ('{stage.method}'): {error}"
            ) from None


def check_graft_checkpoints(recipe: Recipe, *, source: str) -> None:
    """Reads each named graft checkpoint and checks its grafted keys and shapes."""
    with torch.device("meta"):
        vit = build_vit(backbone_spec(recipe))
    target, depth = vit.state_dict(), len(vit.blocks)
    for i, stage in enumerate(recipe.stages):
        graft = stage.graft
        if graft is None or graft.checkpoint is None:
            continue
        where = f"{source}: stages[{i}].graft.checkpoint"
        try:
            state, _, _ = load_encoder_state(graft.checkpoint, graft.format or "")
        except CheckpointError as error:
            raise CheckpointError(f"{where}: {error}") from None
        blocks = depth if graft.num_blocks is None else graft.num_blocks
        report = match_graft(
            state, target, depth, blocks, blocks == depth, graft.checkpoint
        )
        if not report.is_complete and not graft.allow_partial:
            raise CheckpointError(
                f"{where}: "
                + describe_mismatch(
                    graft.checkpoint,
                    report.missing,
                    report.unexpected,
                    report.mismatched,
                )
                + " (or set allow_partial: true to graft only what fits)"
            )


def preflight(recipe: Recipe, *, source: str) -> None:
    """Runs every check of the module docstring, cheapest first."""
    check_inputs(recipe, source=source)
    check_methods_build(recipe, source=source)
    check_transforms(recipe, source=source)
    check_graft_checkpoints(recipe, source=source)
