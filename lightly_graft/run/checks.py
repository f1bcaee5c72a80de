"""Everything checked before the first training step of a run, cheapest first:
the accelerator and device count, the data path and graft checkpoint files
(relative to the working directory), every stage's method (built on the
``meta`` device) and view transforms, and every graft checkpoint's keys and
shapes against the backbone. A problem is a ``RecipeError`` (or the reader's
``CheckpointError``) naming the recipe key; nothing is written or trained yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightly_graft.data.datasets import DEFAULT, data_problem
from lightly_graft.data.folders import train_classes
from lightly_graft.errors import CheckpointError, GraftError, RecipeError
from lightly_graft.modules.backbone import build_vit
from lightly_graft.recipes.schema import Recipe
from lightly_graft.run.build import (
    backbone_spec,
    batch_transform,
    build_method,
    train_transform,
)
from lightly_graft.training.checkpoints import file_problem, load_encoder_state
from lightly_graft.training.grafting import check_graft_report, match_graft

_UNSET_DATA = (
    "is not set: give the dataset folder with --set data.path=DIR "
    "(ImageFolder style: DIR/train/<class>/*, DIR/val/<class>/*)"
)


def check_inputs(recipe: Recipe, *, source: str) -> None:
    """Raises one ``RecipeError`` listing every unusable input file, if any
    (the data's and checkpoint reader's own words); ``source`` names the
    recipe, e.g. "recipe 'x.yaml'"."""
    path = recipe.data.path
    found = [("data.path", _UNSET_DATA if path is None else data_problem(path))]
    for i, stage in enumerate(recipe.stages):
        if stage.graft is not None and stage.graft.checkpoint is not None:
            problem = file_problem(stage.graft.checkpoint)
            found.append((f"stages[{i}].graft.checkpoint", problem))
    problems = [f"{key}: {problem}" for key, problem in found if problem is not None]
    if problems:
        raise RecipeError(f"{source}: " + "; ".join(problems))


def check_stages_build(recipe: Recipe, *, source: str) -> None:
    """Builds every stage's method (on the meta device) and view transform."""
    for i, stage in enumerate(recipe.stages):
        where = f"{source}: stages[{i}] ('{stage.method}')"
        try:
            with torch.device("meta"):
                build_method(recipe, stage)
        except (GraftError, ValueError, TypeError) as error:
            message = f"the method cannot be built with these method_args: {error}"
            raise RecipeError(f"{where}: {message}") from None
        try:
            train_transform(recipe.data, stage.method)
            batch_transform(recipe.data, stage.method)
        except (GraftError, ValueError, TypeError) as error:
            raise RecipeError(f"{where}: {error}") from None


def check_graft_checkpoints(recipe: Recipe, *, source: str) -> None:
    """Reads each named graft checkpoint and checks its grafted keys and shapes."""
    with torch.device("meta"):
        vit = build_vit(backbone_spec(recipe))
    target, depth = vit.state_dict(), len(vit.blocks)
    for i, stage in enumerate(recipe.stages):
        graft = stage.graft
        if graft is None or graft.checkpoint is None:
            continue
        blocks = depth if graft.num_blocks is None else graft.num_blocks
        try:
            state, _, _ = load_encoder_state(graft.checkpoint, graft.format or "")
            report = match_graft(
                state, target, depth, blocks, blocks == depth, graft.checkpoint
            )
            hint = " (or set allow_partial: true to graft only what fits)"
            check_graft_report(report, graft.allow_partial, hint)
        except CheckpointError as error:
            where = f"{source}: stages[{i}].graft.checkpoint"
            raise CheckpointError(f"{where}: {error}") from None


def hardware_problem(recipe: Recipe) -> str | None:
    """An accelerator or device count this machine lacks, as "key: problem"."""
    accelerator, devices = recipe.accelerator, recipe.devices
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        return (
            f"accelerator: '{accelerator}' but this machine has no CUDA GPU: use "
            "--accelerator cpu (or auto)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return "accelerator: 'mps' is not available here: use --accelerator cpu"
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda)
    if on_gpu and devices > torch.cuda.device_count():
        return (
            f"devices: {devices} but this machine has {torch.cuda.device_count()} "
            "GPU(s): give --devices N with N at most that"
        )
    if not on_gpu and accelerator != "mps" and devices > (os.cpu_count() or 1):
        return (
            f"devices: {devices} CPU processes but this machine has {os.cpu_count()} "
            "cores: give --devices 1 (one process uses every core)"
        )
    return None


def class_problem(recipe: Recipe) -> str | None:
    """A dataset with one class makes kNN accuracy meaningless (always 100%)."""
    path = recipe.data.path
    uses_knn = recipe.random_init_knn or any(
        s.knn.every_n_epochs > 0 for s in recipe.stages
    )
    directory = Path(path or DEFAULT).expanduser()
    if not uses_knn or path in (None, DEFAULT) or not directory.is_dir():
        return None
    classes = train_classes(directory)[1]
    if len(classes) != 1:
        return None
    return (
        f"data.path: '{path}' has one class ('{classes[0]}'): kNN accuracy would be "
        "100% whatever the model; add class folders, or turn kNN off "
        "(random_init_knn: false, knn.every_n_epochs: 0)"
    )


def check_run(recipe: Recipe, *, source: str) -> None:
    """Runs every check of the module docstring."""
    problem = hardware_problem(recipe) or class_problem(recipe)
    if problem is not None:
        raise RecipeError(f"{source}: {problem}")
    check_inputs(recipe, source=source)
    check_stages_build(recipe, source=source)
    check_graft_checkpoints(recipe, source=source)
