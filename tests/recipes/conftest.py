from __future__ import annotations

from pathlib import Path

import pytest

TINY_RECIPE = """\
name: tiny
seed: 1
data: default
backbone:
  name: vit_tiny_patch16_224
  img_size: 16
  patch_size: 8
  embed_dim: 32
  depth: 3
  num_heads: 2
stages:
  - name: mim
    method: mae
    epochs: 1
    batch_size: 8
    optimizer: {base_lr: 1.5e-4, betas: [0.9, 0.95], num_stages: 3}
  - name: cl
    method: grafted_moco
    epochs: 2
    batch_size: 8
    graft: previous
    optimizer:
      stage_lrs: [1.5e-5, 1.5e-5, 1.5e-4]
      weight_decay: 0.1
"""


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path
