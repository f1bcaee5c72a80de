"""A stage's `gradient_conflict` section turns on the live GradientConflictMonitor
(Fig 1/8): defaults from the monitor, refused for methods without both losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightly_graft.errors import RecipeError
from lightly_graft.recipes import load_recipe
from lightly_graft.run.stage import callbacks
from lightly_graft.training.gradient_monitor import GradientConflictMonitor

RECIPE = """\
name: conflict
backbone: {{name: vit_tiny_patch16_224, img_size: 32, patch_size: 8, embed_dim: 32,
           depth: 3, num_heads: 2}}
stages:
  - name: only
    method: {method}
    epochs: 1
    batch_size: 8
    knn: {{every_n_epochs: 0}}
    gradient_conflict: {section}
"""


def _load(tmp_path: Path, method: str, section: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(method=method, section=section))
    return load_recipe(path)


def test_gradient_conflict__monitor_with_the_stage_values(tmp_path: Path) -> None:
    recipe = _load(tmp_path, "mtl", "{every_n_steps: 7, window: 1}")
    (monitor,) = [
        c
        for c in callbacks(recipe.stages[0], tmp_path, None)
        if isinstance(c, GradientConflictMonitor)
    ]
    assert (monitor.every_n_steps, monitor.window) == (7, 1)


def test_gradient_conflict__defaults_are_the_monitors(tmp_path: Path) -> None:
    recipe = _load(tmp_path, "mtl", "{}")
    section = recipe.stages[0].gradient_conflict
    default = GradientConflictMonitor()
    assert (section.every_n_steps, section.window) == (
        default.every_n_steps,
        default.window,
    )


def test_gradient_conflict__off_by_default(tmp_path: Path) -> None:
    recipe = _load(tmp_path, "mtl", "null")
    assert not any(
        isinstance(c, GradientConflictMonitor)
        for c in callbacks(recipe.stages[0], tmp_path, None)
    )


def test_gradient_conflict__refused_without_both_losses(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError,
        match=r"stages\[0\].gradient_conflict: method 'mae' has no MIM and CL losses.*'mtl'",
    ):
        _load(tmp_path, "mae", "{}")


def test_gradient_conflict__unknown_key(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="every_n_step"):
        _load(tmp_path, "mtl", "{every_n_step: 3}")
