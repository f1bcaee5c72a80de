"""Tiny image folders and recipes for end-to-end pipeline tests (a few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_PIPELINE_RECIPE = """\
name: tiny_run
seed: 3
data:
  path: {data}
  knn_bank_size: 12
  knn_query_size: 6
  eval_batch_size: 8
backbone:
  name: vit_tiny_patch16_224
  img_size: 16
  patch_size: 8
  embed_dim: 24
  depth: 3
  num_heads: 2
random_init_knn: {knn}
accelerator: cpu
stages:
  - name: mim
    method: mae
    method_args: {{decoder_dim: 16, decoder_depth: 1, decoder_num_heads: 2}}
    epochs: 2
    batch_size: 4
    limit_train_batches: 2
    optimizer: {{base_lr: 1.0e-3, warmup_epochs: 0}}
    knn: {{every_n_epochs: {every}, k: 5}}
  - name: cl
    method: grafted_moco
    method_args: {{projection_hidden_dim: 32, projection_dim: 8}}
    epochs: 2
    batch_size: 4
    limit_train_batches: 2
    graft: previous
    optimizer:
      stage_lrs: [1.0e-3, 1.0e-3, 1.0e-2]
      frozen_stages: [0]
      warmup_epochs: 0
    knn: {{every_n_epochs: {every}, k: 5}}
"""


def write_image_folder(root: Path, *, classes: int = 3, per_class: int = 8) -> Path:
    """``root/train/<class>/*.png`` and ``root/val/<class>/*.png``, 16x16 RGB,
    class-dependent brightness so that classes are separable."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = 20 + 70 * c
                pixels = rng.integers(base, base + 60, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def write_tiny_recipe(
    tmp_path: Path, *, knn: bool = False, name: str = "tiny.yaml"
) -> Path:
    data = write_image_folder(tmp_path / "images")
    text = TINY_PIPELINE_RECIPE.format(
        data=data, knn=str(knn).lower(), every=1 if knn else 0
    )
    path = tmp_path / name
    path.write_text(text)
    return path
