"""The recipe schema: strict, frozen pydantic models, one per YAML section.

Each field's ``description`` is its reference text (``docs/recipes.md``). A key
that is an argument of the library part its section configures (``KNNMonitor``,
``GradientConflictMonitor``, ``Grafting``, ``SSLDataModule``) takes its type,
constraints, default and text from that argument (:func:`configures`);
``optimizer`` is ``GraftedStageOptimizer``'s fields, a key left out taken from
the method's ``default_optimizer()``. An "auto" None is filled in by
``resolve_recipe``.
"""

from __future__ import annotations

import re
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    model_serializer,
    model_validator,
)

from lightly_graft.analysis.run import KINDS
from lightly_graft.data.datamodule import SSLDataModule
from lightly_graft.recipes.library import (
    LibrarySection,
    configures,
    library_default,
    signature_model,
)
from lightly_graft.recipes.validation import STRICT, Invalid, as_lists
from lightly_graft.training.checkpoints import FORMATS
from lightly_graft.training.gradient_monitor import GradientConflictMonitor
from lightly_graft.training.grafting import Grafting
from lightly_graft.training.knn_monitor import KNNMonitor
from lightly_graft.training.optimizer import GraftedStageOptimizer

PREVIOUS = "previous"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

if TYPE_CHECKING:
    Format = str
    Analysis = str
    OptimizerConfig = BaseModel
else:
    # One source each: the checkpoint formats of training.checkpoints, the kinds
    # of analysis.run, the fields of GraftedStageOptimizer (every key optional).
    Format = Literal[FORMATS]
    Analysis = Literal[KINDS]
    OptimizerConfig = signature_model(
        GraftedStageOptimizer, name="OptimizerConfig", optional=True
    )


def _folder_name(value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise ValueError(
            "must be a folder name: letters, digits, '_', '-', '.' (no spaces or '/')"
        )
    return value


_PRECISIONS = Literal[
    "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"
]


def _yaml_number_as_text(value: Any) -> Any:
    # `precision: 32` means the option "32": YAML reads it as a number.
    if isinstance(value, int) and str(value) in typing.get_args(_PRECISIONS):
        return str(value)
    return value


FolderName = Annotated[str, AfterValidator(_folder_name)]
Count = Annotated[int, Field(ge=1)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Scale = Annotated[float, Field(ge=0.01, le=1.0)]
Precision = Annotated[_PRECISIONS, BeforeValidator(_yaml_number_as_text)]
Pair = tuple[NonNegativeFloat, NonNegativeFloat]


def doc(text: str, default: Any = ..., **constraints: Any) -> Any:
    """A field with its reference text (``docs/recipes.md``)."""
    return Field(default, description=text, **constraints)


class Section(BaseModel):
    model_config = STRICT


class Normalize(Section):
    mean: tuple[float, float, float] = doc("Per-channel mean (RGB).")
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = doc(
        "Per-channel standard deviation (RGB)."
    )


class Augment(Section):
    batched: bool = doc(
        "Make the training views from each batch on the training device (kornia, "
        "per-sample parameters; the loader only decodes). false: per image in the "
        "data loader with lightly's transforms. Same augmentations and parameter "
        "ranges either way.",
        True,
    )
    min_scale: Scale | None = doc("Two-view (MoCo v3/BYOL) crop minimum area.", None)
    mae_min_scale: Scale | None = doc("MAE crop minimum area.", None)
    cj_strength: float | None = doc("Colour jitter strength.", None, ge=0, le=2)
    blur_probs: tuple[Unit, Unit] | None = doc(
        "Gaussian blur probability of view 1 and view 2.", None
    )
    blur_sigmas: Pair | None = doc("Blur sigma range in pixels.", None)
    solarize_prob: Unit | None = doc("Solarization probability of view 2.", None)
    hflip_prob: Unit | None = doc("Horizontal flip probability.", None)
    preset: Literal["strong", "medium", "light"] | None = doc(
        "Masked MoCo/BYOL view preset (§4.1: strong = BYOL views, medium = two "
        "crops on one diagonal, light = one shared crop). auto: the method's own. "
        "Only for methods with presets.",
        None,
    )


@configures(
    SSLDataModule,
    "holdout_fraction",
    "knn_bank_size",
    "knn_query_size",
    "eval_batch_size",
    "num_workers",
    "skip_unreadable",
)
class DataConfig(LibrarySection):
    path: str | None = doc(
        "'default' (embedded Fashion-MNIST) or an ImageFolder-style directory "
        "(DIR/<class>/*, or DIR/train + DIR/val|test). Shorthand: `data: DIR`.",
        library_default(SSLDataModule, "data"),
    )
    image_size: int | None = doc(
        "Input size. auto: the backbone's img_size.", None, ge=8
    )
    normalize: Normalize | None = doc(
        "Normalisation. auto: Fashion-MNIST's for 'default', else ImageNet's.", None
    )
    augment: Augment = doc(
        "Augmentation (below). auto: `augmentation_defaults(image_size)`.", Augment()
    )


class BackboneConfig(Section):  # type: ignore[no-redef]  # pydantic.mypy: field kwargs
    """A timm model name plus keyword overrides; YAML: one flat mapping."""

    name: str = doc("timm model name, e.g. vit_base_patch16_224.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Every other key: a timm keyword argument (img_size, "
        "patch_size, embed_dim, depth, num_heads, ...). num_classes is always 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kwargs" not in data:
            kwargs = {k: v for k, v in data.items() if k != "name"}
            return {k: v for k, v in data.items() if k == "name"} | {"kwargs": kwargs}
        return data

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        plain = handler(self)
        return {"name": plain["name"], **plain["kwargs"]}


@configures(Grafting, "num_blocks", "allow_partial", "freeze_epochs")
class GraftConfig(LibrarySection):
    from_: str | None = Field(
        None,
        alias="from",
        description="'previous' (the stage before) or the name of an earlier "
        "stage: graft its final weights. Shorthand: `graft: previous`.",
    )
    checkpoint: str | None = doc("Or: a checkpoint file to graft from.", None)
    format: Format | None = doc(
        f"Format of `checkpoint` (never guessed): {', '.join(FORMATS)}.", None
    )

    @model_validator(mode="after")
    def _one_source(self) -> GraftConfig:
        if (self.from_ is None) == (self.checkpoint is None):
            given = "both" if self.from_ is not None else "neither"
            raise Invalid(
                "", f"give exactly one of 'from' and 'checkpoint' (got {given})"
            )
        if self.checkpoint is not None and self.format is None:
            options = ", ".join(f"'{f}'" for f in FORMATS)
            raise Invalid("format", f"is required with 'checkpoint': one of {options}")
        return self


@configures(Grafting, weight="anchor_weight", p="anchor_p", num_blocks="anchor_blocks")
class AnchorConfig(LibrarySection):
    """The anchor to the grafted weights: ``Grafting``'s ``anchor_*`` arguments."""


@configures(KNNMonitor, "k", "temperature")
class KNNConfig(LibrarySection):
    # Not KNNMonitor's own (>= 1): in a recipe, 0 turns the monitor off.
    every_n_epochs: NonNegativeInt = doc(
        "kNN evaluation period (0: off).", library_default(KNNMonitor, "every_n_epochs")
    )


@configures(GradientConflictMonitor, "every_n_steps", "window")
class GradientConflictConfig(LibrarySection):
    """``GradientConflictMonitor``'s arguments."""


class StageConfig(Section):
    name: FolderName = doc("Stage name: the folder runs/<run>/<name>/.")
    method: str = doc("Zoo method: `lightly-graft zoo` lists them.")
    epochs: Count = doc("Training epochs.")
    batch_size: Count = doc("Batch size per device.")
    optimizer: OptimizerConfig = doc(
        "Optimizer and stage-wise LRs (below); a key left out, or the whole section, "
        "takes the method's `default_optimizer()` value.",
        OptimizerConfig(),
    )
    method_args: dict[str, Any] = doc(
        "Constructor arguments of the method (checked against its signature); a key "
        "left out takes the constructor's default.",
        {},
    )
    graft: GraftConfig | None = doc("Where the initial weights come from.", None)
    anchor: AnchorConfig = doc("Anchor to the grafted weights.", AnchorConfig())
    knn: KNNConfig = doc("kNN monitoring.", KNNConfig())
    gradient_conflict: GradientConflictConfig | None = doc(
        "Log the per-block cosine between the MIM and CL gradients while training "
        "(GradientConflictMonitor, Fig 1/8; `grad_conflict/block_i` in metrics.csv). "
        "For methods with both losses (mtl). null: off.",
        None,
    )
    precision: Precision = doc("Lightning precision.", "32-true")
    accumulate_grad_batches: Count = doc("Gradient accumulation.", 1)
    gradient_clip_val: PositiveFloat | None = doc("Gradient norm clip.", None)
    limit_train_batches: Count | PositiveFloat | None = doc(
        "Batches per epoch (int) or fraction (float); for smoke tests.", None
    )

    @model_validator(mode="after")
    def _consistent(self) -> StageConfig:
        if self.anchor.weight > 0 and self.graft is None:
            message = "an anchor needs grafted weights: add a 'graft' section"
            raise Invalid("anchor.weight", message)
        if self.graft and self.graft.freeze_epochs > self.epochs:
            raise Invalid(
                "graft.freeze_epochs", f"exceeds the stage's {self.epochs} epochs"
            )
        return self


class Recipe(Section):
    name: FolderName = doc("Run name: the folder <output_dir>/<name>/.")
    backbone: BackboneConfig = doc("The ViT: timm name + keyword arguments.")
    stages: tuple[StageConfig, ...] = doc("Stages, run in order.")
    description: str = doc("Free text, shown in the report.", "")
    seed: NonNegativeInt = doc("Seed of every stage (Lightning seed_everything).", 0)
    output_dir: str = doc("Parent folder of the run folder.", "runs")
    data: DataConfig = doc("Dataset, transforms, kNN sets.", DataConfig())
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = doc(
        "Lightning accelerator (CLI: --accelerator).", "auto"
    )
    devices: Count = doc("Devices per node (CLI: --devices).", 1)
    num_nodes: Count = doc("Nodes.", 1)
    strategy: str = doc("Lightning strategy (auto, ddp, fsdp, ...).", "auto")
    random_init_knn: bool = doc(
        "Measure the kNN floor of the randomly initialised backbone.", True
    )
    analysis: tuple[Analysis, ...] = doc(
        "Analyses of every stage's final encoder, drawn into the report "
        "(`lightly-graft analyze --kind`). [] for none.",
        ("attention-distance", "vic"),
    )
    derived: Annotated[dict[str, Any], AfterValidator(as_lists)] | None = doc(
        "Written by lightly-graft train (effective LRs, the keys taken from the "
        "library's defaults, ...); ignored on load.",
        None,
    )

    @model_validator(mode="after")
    def _stages_fit(self) -> Recipe:
        if not self.stages:
            raise Invalid("stages", "is empty: give at least one stage")
        seen: list[str] = []
        ddp = self.devices * self.num_nodes > 1
        for i, stage in enumerate(self.stages):
            at = f"stages[{i}]"
            if stage.name in seen:
                raise Invalid(
                    f"{at}.name", f"'{stage.name}' is used by an earlier stage"
                )
            source = stage.graft.from_ if stage.graft else None
            if source == PREVIOUS and i == 0:
                raise Invalid(
                    f"{at}.graft.from", "the first stage has no previous stage"
                )
            if source not in (None, PREVIOUS) and source not in seen:
                earlier = ", ".join(f"'{s}'" for s in seen) or "none"
                raise Invalid(
                    f"{at}.graft.from",
                    f"'{source}' is not an earlier stage; earlier stages: {earlier} "
                    "(or 'previous')",
                )
            seen.append(stage.name)
            freezes = stage.graft is not None and stage.graft.freeze_epochs > 0
            if ddp and freezes and "find_unused_parameters_true" not in self.strategy:
                raise Invalid(
                    f"{at}.graft.freeze_epochs",
                    "freezes blocks during training, which DDP only allows when it "
                    "looks for unused parameters: set strategy: "
                    "ddp_find_unused_parameters_true (or freeze with "
                    "optimizer.frozen_stages, decided before DDP starts)",
                )
        return self
