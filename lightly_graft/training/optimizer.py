"""GraftedStageOptimizer: stage-wise learning rates for Layer Grafted Pre-training.

The ViT blocks are split into ``num_stages`` equal stages (ViT-B: 3 x 4 blocks).
Each stage gets its own base LR (paper: ``[1.5e-5, 1.5e-5, 1.5e-4]``), the
embeddings take stage 0's, and everything on top (final norm, projector,
predictor, decoder) takes ``head_lr`` (default: the last stage's, as in the
official code). Every group has a ``_no_decay`` twin for biases, norms, tokens and
the position embedding. LRs are base LRs scaled by batch/256 (:func:`scale_lr`),
and one warmup + cosine multiplier scales each group's own LR, so the stage
ratios hold through the schedule (one LR written over all groups, as some MoCo
v3 code does, would erase them).

timm's ``param_groups_layer_decay`` gives per-layer groups but no named stages
and no frozen stages; lightly's ``get_weight_decay_parameters`` gives decay /
no-decay lists but no names. Hence this builder; the scheduler is lightly's
``CosineWarmupScheduler``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, get_args

import torch
from annotated_types import Ge, Gt, Interval
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn

from lightly_graft.functional.schedules import scale_lr
from lightly_graft.modules.backbone import ParamLocation, locate_parameters

OptimizerName = Literal["adamw", "sgd", "lars"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
# Value constraints as typing metadata (annotated-types): the recipe layer's
# validator (pydantic) reads them from these annotations, so the optimizer
# section of a recipe is checked against this class, not a copy of it.
_NonNegative = Annotated[float, Ge(0)]
_Fraction = Annotated[float, Interval(ge=0, le=1)]
_Beta = Annotated[float, Interval(ge=0, lt=1)]
_NO_DECAY_NAMES = ("cls_token", "pos_embed", "reg_token", "mask_token")


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """No weight decay on biases, norm weights (1-d), tokens and pos-embed."""
    leaf = name.split(".")[-1]
    return param.ndim <= 1 or leaf == "bias" or leaf in _NO_DECAY_NAMES


@dataclass(frozen=True)
class GraftedStageOptimizer:
    """Spec of the optimizer and schedule; :meth:`build` makes them for a model.

    Args:
        name: ``adamw`` (pre-training, fine-tuning), ``sgd`` or ``lars``
            (linear evaluation).
        base_lr: LR of every group when ``stage_lrs`` is not given.
        stage_lrs: Base LR per stage (length ``num_stages``).
        head_lr: Base LR of the top (final norm, heads); default: last stage's.
        num_stages: Number of equal stages of ViT blocks.
        frozen_stages: Stages whose parameters get ``requires_grad=False`` and
            are left out of the optimizer (decided at build time).
        frozen_blocks: Freeze the embeddings and blocks ``[0, frozen_blocks)``
            (partial fine-tuning, paper Fig 5).
        layer_decay: Layer-wise LR decay (fine-tuning, paper 0.6): the group of
            layer ``l`` (0 = embeddings, i + 1 = block i, depth + 1 = top) gets
            ``base_lr * layer_decay ** (depth + 1 - l)``. Excludes ``stage_lrs``.
        weight_decay: Decoupled weight decay of the decay groups.
        betas: AdamW betas.
        momentum: SGD/LARS momentum.
        warmup_epochs: Linear warmup length in epochs (fractions allowed).
        min_lr_ratio: Final LR of the cosine schedule as a fraction of the peak.
        scale_with_batch_size: Multiply base LRs by global batch / 256.
    """

    name: OptimizerName = "adamw"
    base_lr: Annotated[float, Gt(0)] = 1.5e-4
    stage_lrs: tuple[_NonNegative, ...] | None = None
    head_lr: _NonNegative | None = None
    num_stages: Annotated[int, Ge(1)] = 3
    frozen_stages: tuple[Annotated[int, Ge(0)], ...] = ()
    frozen_blocks: Annotated[int, Ge(0)] = 0
    layer_decay: Annotated[float, Interval(gt=0, le=1)] | None = None
    weight_decay: _NonNegative = 0.05
    betas: tuple[_Beta, _Beta] = (0.9, 0.95)
    momentum: _Fraction = 0.9
    warmup_epochs: _NonNegative = 40.0
    min_lr_ratio: _Fraction = 0.0
    scale_with_batch_size: bool = True

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"optimizer name must be one of {OPTIMIZERS}, got '{self.name}'."
            )
        if self.stage_lrs is not None:
            object.__setattr__(
                self, "stage_lrs", tuple(float(x) for x in self.stage_lrs)
            )
            if len(self.stage_lrs) != self.num_stages:
                raise ValueError(
                    f"stage_lrs has {len(self.stage_lrs)} values but num_stages is "
                    f"{self.num_stages}; give one base LR per stage."
                )
            if self.layer_decay is not None:
                raise ValueError("Give either stage_lrs or layer_decay, not both.")
        object.__setattr__(
            self, "frozen_stages", tuple(int(s) for s in self.frozen_stages)
        )
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        bad = [s for s in self.frozen_stages if not 0 <= s < self.num_stages]
        if bad:
            raise ValueError(
                f"frozen_stages {bad} out of range: stages are 0..{self.num_stages - 1}."
            )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}.")

    @classmethod
    def coerce(
        cls,
        value: GraftedStageOptimizer | Mapping[str, Any] | None,
        default: GraftedStageOptimizer,
    ) -> GraftedStageOptimizer:
        if value is None:
            return default
        if isinstance(value, GraftedStageOptimizer):
            return value
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- learning rates ------------------------------------------------------
    def stage_base_lr(self, stage: int) -> float:
        """Base LR (before batch scaling) of a stage; ``num_stages`` = top."""
        if stage == self.num_stages:
            if self.head_lr is not None:
                return self.head_lr
            return self.stage_lrs[-1] if self.stage_lrs else self.base_lr
        return self.stage_lrs[stage] if self.stage_lrs else self.base_lr

    def _effective(self, base: float, batch_size: int) -> float:
        return scale_lr(base, batch_size) if self.scale_with_batch_size else base

    # -- groups --------------------------------------------------------------
    def freeze(
        self, model: nn.Module, encoder: MaskedVisionTransformerTIMM
    ) -> list[str]:
        """Sets ``requires_grad=False`` on frozen stages/blocks; returns the names."""
        frozen = []
        locations = self._locations(model, encoder)
        for name, param in model.named_parameters():
            if self._is_frozen(locations[name]):
                param.requires_grad_(False)
                frozen.append(name)
        return frozen

    def _is_frozen(self, loc: ParamLocation) -> bool:
        if loc.is_top:
            return False
        frozen_block = self.frozen_blocks > 0 and loc.block < self.frozen_blocks
        return loc.stage in self.frozen_stages or frozen_block

    def _locations(
        self, model: nn.Module, encoder: MaskedVisionTransformerTIMM
    ) -> dict[str, ParamLocation]:
        return locate_parameters(model, encoder, self.num_stages)

    def _group_key(self, loc: ParamLocation, depth: int) -> tuple[str, float]:
        """(group name, base LR) of a location."""
        if self.layer_decay is not None:
            layer = loc.block + 1  # embeddings 0, block i -> i + 1, top depth + 1
            scale = self.layer_decay ** (depth + 1 - layer)
            return f"layer{layer}", self.base_lr * scale
        name = "head" if loc.is_top else f"stage{loc.stage}"
        return name, self.stage_base_lr(loc.stage)

    def param_groups(
        self,
        model: nn.Module,
        encoder: MaskedVisionTransformerTIMM,
        batch_size: int,
        exclude: Iterable[nn.Parameter] = (),
    ) -> list[dict[str, Any]]:
        """Named parameter groups of the trainable parameters of ``model``.

        Frozen stages/blocks get ``requires_grad=False`` here. Parameters in
        ``exclude`` (e.g. an online classifier with its own group) are skipped.
        Groups are ordered by stage; empty groups are left out.
        """
        self.freeze(model, encoder)
        excluded = {id(p) for p in exclude}
        locations = self._locations(model, encoder)
        depth = len(encoder.vit.blocks)
        groups: dict[str, dict[str, Any]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad or id(param) in excluded:
                continue
            key, base = self._group_key(locations[name], depth)
            no_decay = is_no_decay(name, param)
            key = f"{key}_no_decay" if no_decay else key
            group = groups.setdefault(
                key,
                {
                    "name": key,
                    "params": [],
                    "lr": self._effective(base, batch_size),
                    "base_lr": base,
                    "weight_decay": 0.0 if no_decay else self.weight_decay,
                },
            )
            group["params"].append(param)
        return sorted(groups.values(), key=_group_order)

    # -- optimizer and schedule ---------------------------------------------
    def make_optimizer(self, groups: Sequence[dict[str, Any]]) -> torch.optim.Optimizer:
        if self.name == "adamw":
            return torch.optim.AdamW(
                groups, betas=self.betas, weight_decay=self.weight_decay
            )
        if self.name == "sgd":
            return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=self.momentum)
        return LARS(groups, lr=groups[0]["lr"], momentum=self.momentum)

    def build(
        self,
        model: nn.Module,
        encoder: MaskedVisionTransformerTIMM,
        batch_size: int,
        total_steps: int,
        steps_per_epoch: float,
        extra_groups: Sequence[dict[str, Any]] = (),
    ) -> tuple[torch.optim.Optimizer, CosineWarmupScheduler]:
        """Builds the optimizer and the per-step scheduler.

        Args:
            model: The module whose parameters are optimised.
            encoder: The online ViT (defines blocks and stages).
            batch_size: Global batch size, for the batch/256 scaling.
            total_steps: Optimizer steps of the whole run.
            steps_per_epoch: Optimizer steps per epoch (converts warmup epochs).
            extra_groups: Groups with their own settings (``name``, ``params``,
                ``lr`` as a base LR, ``weight_decay``); their parameters are
                excluded from the stage groups. Their LR is batch-scaled too.
        """
        exclude = [p for g in extra_groups for p in g["params"]]
        groups = self.param_groups(model, encoder, batch_size, exclude=exclude)
        for extra in extra_groups:
            params = [p for p in extra["params"] if p.requires_grad]
            if params:
                groups.append(
                    {
                        **extra,
                        "params": params,
                        "base_lr": extra["lr"],
                        "lr": self._effective(extra["lr"], batch_size),
                    }
                )
        if not groups:
            raise ValueError("No trainable parameters: every stage is frozen.")
        optimizer = self.make_optimizer(groups)
        total_steps = max(int(total_steps), 1)
        warmup = min(int(round(self.warmup_epochs * steps_per_epoch)), total_steps)
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup,
            max_epochs=total_steps,
            end_value=self.min_lr_ratio,
        )
        return optimizer, scheduler


def _group_order(group: dict[str, Any]) -> tuple[int, int, str]:
    name = group["name"].removesuffix("_no_decay")
    if name == "head":
        rank = 10**6
    else:
        rank = int("".join(c for c in name if c.isdigit()) or 0)
    return rank, int(group["name"].endswith("_no_decay")), name
