"""The recipe schema: frozen, typed dataclasses, one per YAML section.

Each field's ``doc`` is its reference documentation (``docs/recipes.md`` is
generated from it by :func:`lightly_graft.recipes.reference.reference_markdown`).
A ``None`` default that the docs call "auto" is filled in by
:func:`lightly_graft.recipes.resolve.resolve_recipe`; the resolved values are
what the saved ``recipe.yaml`` beside each checkpoint shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from lightly_graft.recipes.typed import (
    at_least,
    greater_than,
    in_range,
    option,
)

PREVIOUS = "previous"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def safe_name(value: str) -> str | None:
    if _SAFE_NAME.match(value):
        return None
    return "must be a folder name: letters, digits, '_', '-', '.' (no spaces or '/')"


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, float, float] = option(doc="Per-channel mean (RGB).")
    std: tuple[float, float, float] = option(
        doc="Per-channel standard deviation (RGB).", check=greater_than(0)
    )


@dataclass(frozen=True)
class Augment:
    batched: bool = option(
        True,
        doc="Make the training views from each batch on the training device "
        "(kornia, per-sample parameters; the loader only decodes). false: "
        "per image in the data loader with lightly's transforms. Same "
        "augmentations and parameter ranges either way.",
    )
    min_scale: float | None = option(
        None,
        doc="Two-view (MoCo v3/BYOL) random-resized-crop minimum area. auto: 0.2 "
        "at <= 64 px, else 0.08 (BYOL).",
        check=in_range(0.01, 1.0),
    )
    mae_min_scale: float | None = option(
        None, doc="MAE crop minimum area. auto: 0.2 (MAE).", check=in_range(0.01, 1.0)
    )
    cj_strength: float | None = option(
        None, doc="Colour jitter strength. auto: 1.0.", check=in_range(0.0, 2.0)
    )
    blur_probs: tuple[float, float] | None = option(
        None,
        doc="Gaussian blur probability of view 1 and view 2. auto: [0, 0] at <= 64 "
        "px (lightly's CIFAR setting), else [1.0, 0.1] (BYOL).",
        check=in_range(0.0, 1.0),
    )
    blur_sigmas: tuple[float, float] | None = option(
        None, doc="Blur sigma range in pixels. auto: [0.1, 2.0].", check=at_least(0.0)
    )
    solarize_prob: float | None = option(
        None, doc="Solarization probability of view 2. auto: 0.2.", check=in_range(0, 1)
    )
    hflip_prob: float | None = option(
        None, doc="Horizontal flip probability. auto: 0.5.", check=in_range(0.0, 1.0)
    )
    preset: Literal["strong", "medium", "light"] | None = option(
        None,
        doc="Masked MoCo/BYOL view preset (§4.1: strong = BYOL views, medium = "
        "two crops on one diagonal, light = one shared crop). auto: the method's "
        "own default (light). Only for methods with presets.",
    )


@dataclass(frozen=True)
class DataConfig:
    path: str | None = option(
        "default",
        doc="'default' (embedded Fashion-MNIST) or an ImageFolder-style directory "
        "(DIR/<class>/*, or DIR/train + DIR/val|test). Shorthand: `data: DIR`.",
    )
    image_size: int | None = option(
        None,
        doc="Input size in pixels. auto: the backbone's img_size.",
        check=at_least(8),
    )
    normalize: Normalize | None = option(
        None, doc="Normalisation. auto: Fashion-MNIST's for 'default', else ImageNet's."
    )
    augment: Augment = option(factory=Augment, doc="Augmentation values (see below).")
    holdout_fraction: float = option(
        0.1,
        doc="Fraction held out for kNN queries when a folder has no val/ or test/.",
        check=in_range(0.001, 0.999),
    )
    knn_bank_size: int | None = option(
        10_000, doc="Training images in the kNN bank (null: all).", check=at_least(1)
    )
    knn_query_size: int | None = option(
        2_000,
        doc="Held-out images in the kNN query set (null: all).",
        check=at_least(1),
    )
    eval_batch_size: int = option(
        256, doc="Batch size for embedding the kNN bank and queries.", check=at_least(1)
    )
    num_workers: int = option(
        0,
        doc="DataLoader worker processes (0: load in the training process).",
        check=at_least(0),
    )


@dataclass(frozen=True)
class BackboneConfig:
    """A timm model name plus keyword overrides; YAML: one flat mapping."""

    name: str = option(doc="timm model name, e.g. vit_base_patch16_224.")
    kwargs: dict[str, Any] = option(
        factory=dict,
        doc="Every other key: a timm keyword argument (img_size, patch_size, "
        "embed_dim, depth, num_heads, ...). num_classes is always 0.",
    )

    def to_plain(self) -> dict[str, Any]:
        return {"name": self.name, **{k: _plain(v) for k, v in self.kwargs.items()}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw", "sgd", "lars"] = option("adamw", doc="Optimizer.")
    base_lr: float | None = option(
        None,
        doc="Base LR of every stage (scaled by global batch / 256). Give this or "
        "stage_lrs.",
        check=greater_than(0),
    )
    stage_lrs: tuple[float, ...] | None = option(
        None,
        doc="Base LR per stage, lowest blocks first (paper: [1.5e-5, 1.5e-5, "
        "1.5e-4]); embeddings take the first, everything above the blocks the last.",
        check=at_least(0),
    )
    head_lr: float | None = option(
        None,
        doc="Base LR of the parts above the blocks (norm, heads, decoder). auto: "
        "the top stage's LR.",
        check=at_least(0),
    )
    num_stages: int = option(
        3, doc="Equal groups the ViT blocks are split into.", check=at_least(1)
    )
    frozen_stages: tuple[int, ...] = option(
        (), doc="Stages (0-based) whose parameters do not train.", check=at_least(0)
    )
    weight_decay: float = option(
        0.05, doc="Weight decay (none on 1-d parameters).", check=at_least(0)
    )
    betas: tuple[float, float] = option(
        (0.9, 0.95), doc="AdamW betas.", check=in_range(0.0, 0.99999)
    )
    momentum: float = option(0.9, doc="SGD/LARS momentum.", check=in_range(0.0, 1.0))
    warmup_epochs: float = option(
        0.0, doc="Linear warmup, then cosine decay.", check=at_least(0)
    )
    min_lr_ratio: float = option(
        0.0,
        doc="Final LR of the cosine schedule as a fraction of the peak.",
        check=in_range(0.0, 1.0),
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if (self.base_lr is None) == (self.stage_lrs is None):
            given = "both" if self.base_lr is not None else "neither"
            yield "", f"give exactly one of base_lr and stage_lrs (got {given})"
        if self.stage_lrs is not None and len(self.stage_lrs) != self.num_stages:
            yield (
                "stage_lrs",
                (
                    f"has {len(self.stage_lrs)} values but num_stages is "
                    f"{self.num_stages}: give one base LR per stage"
                ),
            )
        for i, stage in enumerate(self.frozen_stages):
            if stage >= self.num_stages:
                yield (
                    f"frozen_stages[{i}]",
                    (
                        f"stage {stage} does not exist: stages are 0..{self.num_stages - 1}"
                    ),
                )


@dataclass(frozen=True)
class GraftConfig:
    from_: str | None = option(
        None,
        key="from",
        doc="'previous' (the stage before) or the name of an earlier stage: graft "
        "its final weights. Shorthand: `graft: previous`.",
    )
    checkpoint: str | None = option(None, doc="Or: a checkpoint file to graft from.")
    format: Literal["lightly_graft", "lightning", "mae", "timm"] | None = option(
        None,
        doc="Format of `checkpoint` (never guessed): lightly_graft, lightning, mae "
        "({'model': ...}) or timm (plain state dict).",
    )
    num_blocks: int | None = option(
        None,
        doc="Graft the embeddings and the lowest N blocks (null: all).",
        check=at_least(0),
    )
    allow_partial: bool = option(False, doc="Allow missing/unexpected keys.")
    freeze_epochs: int = option(
        0,
        doc="Keep the grafted blocks frozen for the first N epochs.",
        check=at_least(0),
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if (self.from_ is None) == (self.checkpoint is None):
            given = "both" if self.from_ is not None else "neither"
            yield "", f"give exactly one of 'from' and 'checkpoint' (got {given})"
        if self.checkpoint is not None and self.format is None:
            yield (
                "format",
                (
                    "is required with 'checkpoint': one of 'lightly_graft', 'lightning', "
                    "'mae', 'timm'"
                ),
            )


@dataclass(frozen=True)
class AnchorConfig:
    weight: float = option(
        0.0,
        doc="lambda of the anchor penalty (0: off). Paper: l2, ViT-L only.",
        check=at_least(0),
    )
    p: Literal[1, 2] = option(
        2,
        doc="2: lambda*||w - w_mim||^2 (paper); 1: lambda*sum|w - w_mim| (official code).",
    )
    num_blocks: int | None = option(
        None,
        doc="Anchor the embeddings and the lowest N blocks (null: all grafted).",
        check=at_least(0),
    )


@dataclass(frozen=True)
class KNNConfig:
    every_n_epochs: int = option(
        1, doc="kNN evaluation period (0: off).", check=at_least(0)
    )
    k: int = option(200, doc="Neighbours.", check=at_least(1))
    temperature: float = option(
        0.1, doc="Weighting temperature.", check=greater_than(0)
    )


Precision = Literal[
    "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"
]


@dataclass(frozen=True)
class StageConfig:
    name: str = option(
        doc="Stage name: the folder runs/<run>/<name>/.", check=safe_name
    )
    method: str = option(doc="Zoo method: `lightly-graft zoo` lists them.")
    epochs: int = option(doc="Training epochs.", check=at_least(1))
    batch_size: int = option(doc="Batch size per device.", check=at_least(1))
    optimizer: OptimizerConfig = option(doc="Optimizer and stage-wise LRs.")
    method_args: dict[str, Any] = option(
        factory=dict,
        doc="Constructor arguments of the method (checked against the zoo).",
    )
    graft: GraftConfig | None = option(None, doc="Where the initial weights come from.")
    anchor: AnchorConfig = option(
        factory=AnchorConfig, doc="Anchor to the grafted weights."
    )
    knn: KNNConfig = option(factory=KNNConfig, doc="kNN monitoring.")
    precision: Precision = option("32-true", doc="Lightning precision.")
    accumulate_grad_batches: int = option(
        1, doc="Gradient accumulation.", check=at_least(1)
    )
    gradient_clip_val: float | None = option(
        None, doc="Gradient norm clip.", check=greater_than(0)
    )
    limit_train_batches: int | float | None = option(
        None,
        doc="Batches per epoch (int) or fraction (float); for smoke tests.",
        check=greater_than(0),
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.anchor.weight > 0 and self.graft is None:
            yield (
                "anchor.weight",
                "an anchor needs grafted weights: add a 'graft' section",
            )
        if self.graft and self.graft.freeze_epochs > self.epochs:
            yield "graft.freeze_epochs", f"exceeds the stage's {self.epochs} epochs"


#: Kinds of ``lightly-graft analyze`` (``analysis.run.KINDS``) a recipe can draw
#: into its report; the recipe checker tells a typo by this Literal.
Analysis = Literal["attention-distance", "vic", "tsne", "gradient-conflict"]


@dataclass(frozen=True)
class Recipe:
    name: str = option(
        doc="Run name: the folder <output_dir>/<name>/.", check=safe_name
    )
    backbone: BackboneConfig = option(doc="The ViT: timm name + keyword arguments.")
    stages: tuple[StageConfig, ...] = option(doc="Stages, run in order.")
    description: str = option("", doc="Free text, shown in the report.")
    seed: int = option(
        0, doc="Seed of every stage (Lightning seed_everything).", check=at_least(0)
    )
    output_dir: str = option("runs", doc="Parent folder of the run folder.")
    data: DataConfig = option(factory=DataConfig, doc="Dataset, transforms, kNN sets.")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = option(
        "auto", doc="Lightning accelerator (CLI: --accelerator)."
    )
    devices: int = option(
        1, doc="Devices per node (CLI: --devices).", check=at_least(1)
    )
    num_nodes: int = option(1, doc="Nodes.", check=at_least(1))
    strategy: str = option("auto", doc="Lightning strategy (auto, ddp, fsdp, ...).")
    random_init_knn: bool = option(
        True, doc="Measure the kNN floor of the randomly initialised backbone."
    )
    analysis: tuple[Analysis, ...] = option(
        ("attention-distance", "vic"),
        doc="Analyses of every stage's final encoder, drawn into the report "
        "(`lightly-graft analyze --kind`). [] for none.",
    )
    derived: dict[str, Any] | None = option(
        None,
        doc="Written by lightly-graft train (effective LRs, ...); ignored on load.",
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.stages:
            yield "stages", "is empty: give at least one stage"
        seen: list[str] = []
        for i, stage in enumerate(self.stages):
            if stage.name in seen:
                yield f"stages[{i}].name", f"'{stage.name}' is used by an earlier stage"
            source = stage.graft.from_ if stage.graft else None
            if source == PREVIOUS and i == 0:
                yield f"stages[{i}].graft.from", "the first stage has no previous stage"
            elif source not in (None, PREVIOUS) and source not in seen:
                yield (
                    f"stages[{i}].graft.from",
                    (
                        f"'{source}' is not an earlier stage; earlier stages: "
                        + (", ".join(f"'{s}'" for s in seen) or "none")
                        + " (or 'previous')"
                    ),
                )
            seen.append(stage.name)
            distributed = self.devices * self.num_nodes > 1
            if (
                distributed
                and stage.graft is not None
                and stage.graft.freeze_epochs > 0
                and "find_unused_parameters_true" not in self.strategy
            ):
                yield (
                    f"stages[{i}].graft.freeze_epochs",
                    "freezes blocks during training, which DDP only allows when it "
                    "looks for unused parameters: set strategy: "
                    "ddp_find_unused_parameters_true (or freeze with "
                    "optimizer.frozen_stages, decided before DDP starts)",
                )
