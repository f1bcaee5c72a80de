"""The Grafting callback: MIM weights into the lower blocks, and the anchor.

Layer Grafted Pre-training (§2.4, A.5, A.6): step ii starts from the step-i
(MIM) weights; the embeddings and blocks ``[0, k)`` of the online and momentum
encoders are loaded key for key (timm names, as the official code does), and an
optional penalty ``lambda * ||theta - theta_mim||^2`` keeps the anchored blocks
close to them.

The position embedding is loaded as it is, never rebuilt: MoCo v3's sin-cos
table is MAE's with the patch grid transposed, so regenerating one over the
other would silently scramble positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from annotated_types import Ge
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from lightly_graft.errors import CheckpointError
from lightly_graft.functional.anchor import (
    AnchorNorm,
    anchor_penalty,
    check_anchor_p,
    flatten,
    sum_of_distances,
)
from lightly_graft.modules.backbone import param_location
from lightly_graft.signatures import check_bounds
from lightly_graft.training.checkpoints import check_format, load_encoder_state
from lightly_graft.training.state_fit import describe_mismatch, mismatched_shapes

log = logging.getLogger(__name__)


@dataclass
class GraftReport:
    """What a graft did. ``loaded``: keys copied (timm names); ``missing``:
    keys to graft that the checkpoint lacks; ``unexpected``: checkpoint keys the
    model lacks; ``skipped``: keys present in both but outside the grafted
    range, plus the checkpoint's non-encoder keys (heads, decoder);
    ``mismatched``: ``(key, checkpoint shape, model shape)``."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )

    @property
    def is_complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def loads_nothing(self) -> bool:
        """Whether tensors were to be grafted but none of them fits."""
        return not self.loaded and bool(self.missing or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (e.g. ``graft_report.json``)."""
        return {
            "source": self.source,
            "complete": self.is_complete,
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "skipped": list(self.skipped),
            "mismatched": [
                {"key": k, "checkpoint": list(a), "model": list(b)}
                for k, a, b in self.mismatched
            ],
        }

    def summary(self) -> str:
        return (
            f"Grafted {len(self.loaded)} tensors from '{self.source}' "
            f"(missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"skipped {len(self.skipped)}, shape mismatches {len(self.mismatched)})"
        )


def check_graft_report(report: GraftReport, allow_partial: bool, hint: str) -> None:
    """Raises ``CheckpointError`` for a graft of which no tensor fits, and (unless
    ``allow_partial``; ``hint`` ends the message) for a partial one."""
    if report.loads_nothing:
        wanted = len(report.missing) + len(report.mismatched)
        raise CheckpointError(
            f"nothing of '{report.source}' can be grafted: none of the {wanted} "
            f"tensors to graft fits ({len(report.missing)} missing, "
            f"{len(report.mismatched)} of another shape, e.g. "
            f"{(report.missing + [m[0] for m in report.mismatched])[:3]}); it is a "
            "checkpoint of another architecture or format: check the graft format "
            "and the backbone (allow_partial does not help here)"
        )
    if not report.is_complete and not allow_partial:
        mismatch = describe_mismatch(
            report.source, report.missing, report.unexpected, report.mismatched
        )
        raise CheckpointError(mismatch + hint)


def grafted_keys(
    state_keys: Sequence[str], depth: int, num_blocks: int, norm: bool
) -> list[str]:
    """Keys (timm names) of the embeddings, blocks ``[0, num_blocks)`` and, if
    ``norm``, the final norm; nothing at all when ``num_blocks == 0``."""
    if num_blocks == 0:
        return []
    keys = []
    for key in state_keys:
        loc = param_location(key, depth, 1)
        if loc.block == -1 or 0 <= loc.block < num_blocks:
            keys.append(key)
        elif norm and key.startswith("norm."):
            keys.append(key)
    return keys


class AnchorRegularizer(nn.Module):
    """``weight * sum ||theta - theta_mim||_p^p`` over named parameters of a model.

    The MIM weights are plain tensors the module holds, neither parameters nor
    buffers: the optimizer never sees them, DDP does not broadcast them from rank
    0 on every step (it does so for every buffer, persistent or not: about 600 MB
    a step for ViT-L's 12 anchored blocks in float32), and checkpoints do not
    store them (a resumed run reads them again from the graft checkpoint, in
    :meth:`Grafting.setup`, before the checkpoint restores the trained weights).
    They follow the module's moves across devices and dtypes as buffers would.
    ``forward(model)`` reads the current parameters by name.
    """

    def __init__(
        self,
        names: Sequence[str],
        references: Sequence[Tensor],
        stages: Sequence[int],
        weight: float,
        p: int = 2,
    ) -> None:
        super().__init__()
        check_anchor_p(p, "anchor p")
        if len(references) != len(names):
            raise ValueError(
                f"got {len(references)} reference tensors for {len(names)} names."
            )
        self.names = list(names)
        self.stages = list(stages)
        self.weight = weight
        self.p = p
        # One flat copy (the penalty's one operand); references() are views.
        self._shapes = [ref.shape for ref in references]
        self._flat = flatten([ref.detach() for ref in references])

    def references(self) -> list[Tensor]:
        sizes = [shape.numel() for shape in self._shapes]
        chunks = self._flat.split(sizes)
        return [c.view(shape) for c, shape in zip(chunks, self._shapes, strict=True)]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        # nn.Module.to/cuda/half/... reach plain tensor attributes only here.
        super()._apply(fn, recurse)
        self._flat = fn(self._flat)
        return self

    def forward(self, model: nn.Module) -> Tensor:
        params = [model.get_parameter(n) for n in self.names]
        if not params:
            return anchor_penalty([], [], self.weight, self.p)
        return self.weight * sum_of_distances(params, self._flat, self.p)

    @torch.no_grad()
    def distances(self, model: nn.Module) -> dict[int, float]:
        """Unweighted distance ``sum ||theta - theta_mim||_p^p`` per stage."""
        out: dict[int, float] = {}
        references = self.references()
        for stage in sorted(set(self.stages)):
            idx = [i for i, s in enumerate(self.stages) if s == stage]
            params = [model.get_parameter(self.names[i]) for i in idx]
            refs = [references[i] for i in idx]
            out[stage] = float(sum_of_distances(params, refs, self.p))
        return out


def match_graft(
    source: dict[str, Tensor],
    target: dict[str, Tensor],
    depth: int,
    num_blocks: int,
    norm: bool,
    source_name: str,
) -> GraftReport:
    """What grafting ``source`` into ``target`` would load: the embeddings, blocks
    ``[0, num_blocks)`` and (``norm``) the final norm, with the missing,
    unexpected, shape-mismatched and skipped keys. The recipe check before a run
    and :class:`Grafting` both judge a checkpoint by this report."""
    wanted = grafted_keys(list(target), depth, num_blocks, norm)
    report = GraftReport(source=source_name)
    report.missing = sorted(key for key in wanted if key not in source)
    report.unexpected = sorted(key for key in source if key not in target)
    report.mismatched = mismatched_shapes({k: target[k] for k in wanted}, source)
    bad = {m[0] for m in report.mismatched}
    report.loaded = [key for key in wanted if key in source and key not in bad]
    report.skipped = sorted(
        key for key in source if key in target and key not in wanted
    )
    return report


class Grafting(pl.Callback):
    """Loads MIM weights into the lower blocks before training; adds the anchor.

    Args:
        checkpoint: Path of the step-i checkpoint.
        format: Its format, one of ``training.checkpoints.FORMATS``:
            ``lightly_graft``, ``lightning``, ``mae`` (the released encoder or a
            training checkpoint), ``moco_v3`` (``main_moco.py``'s checkpoint,
            for CL->MIM) or ``timm``.
        num_blocks: Graft the embeddings and the lowest N blocks; None (null):
            all blocks. 0 grafts nothing (plain training from scratch).
        graft_norm: Also load the final norm; default: when all blocks are grafted.
        anchor_weight: lambda of the anchor penalty; 0: no anchor (paper: l2,
            ViT-L only).
        anchor_p: 2: ``lambda * ||w - w_mim||^2`` (paper); 1:
            ``lambda * sum |w - w_mim|`` (official code).
        anchor_blocks: Anchor the embeddings and the lowest N blocks; None
            (null): the grafted blocks (ViT-L in the paper: 12).
        num_stages: Stages for the per-stage anchor-distance logs.
        freeze_epochs: Keep the grafted blocks frozen for the first N epochs
            (MIM->CL grafting, Table 1: the whole run). This toggles
            ``requires_grad`` during training: under DDP use the
            ``ddp_find_unused_parameters_true`` strategy.
        allow_partial: Load what fits instead of refusing a partial or
            mismatched checkpoint.
        log_every_n_steps: How often to log the anchor distance per stage.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        format: str,
        num_blocks: Annotated[int, Ge(0)] | None = None,
        graft_norm: bool | None = None,
        anchor_weight: Annotated[float, Ge(0)] = 0.0,
        anchor_p: AnchorNorm = 2,
        anchor_blocks: Annotated[int, Ge(0)] | None = None,
        num_stages: int = 3,
        freeze_epochs: Annotated[int, Ge(0)] = 0,
        allow_partial: bool = False,
        log_every_n_steps: int = 50,
    ) -> None:
        super().__init__()
        self.checkpoint = Path(checkpoint)
        self.format = check_format(format)
        check_bounds(Grafting, locals())
        check_anchor_p(anchor_p, "anchor_p")
        self.num_blocks = num_blocks
        self.graft_norm = graft_norm
        self.anchor_weight = anchor_weight
        self.anchor_p = anchor_p
        self.anchor_blocks = anchor_blocks
        self.num_stages = num_stages
        self.freeze_epochs = freeze_epochs
        self.allow_partial = allow_partial
        self.log_every_n_steps = log_every_n_steps
        self.report: GraftReport | None = None
        self._frozen_names: list[str] = []
        self._trainable: dict[str, bool] = {}

    # -- loading -------------------------------------------------------------
    def graft(self, pl_module: Any) -> GraftReport:
        """Loads the weights into every encoder of ``pl_module.encoders()``,
        registers the anchor, and returns the report (also kept as
        ``self.report``)."""
        source, _, non_encoder = load_encoder_state(self.checkpoint, self.format)
        encoders = pl_module.encoders()
        online = encoders["backbone"]
        target = online.vit.state_dict()
        depth = len(online.vit.blocks)
        k = depth if self.num_blocks is None else self.num_blocks
        if k > depth:
            raise CheckpointError(f"num_blocks={k} exceeds the model depth {depth}.")
        norm = (k == depth) if self.graft_norm is None else self.graft_norm
        report = match_graft(source, target, depth, k, norm, str(self.checkpoint))
        report.skipped += non_encoder
        hint = " Pass allow_partial=True to load only what fits."
        check_graft_report(report, self.allow_partial, hint)
        subset = {key: source[key] for key in report.loaded}
        with torch.no_grad():
            for encoder in encoders.values():
                encoder.vit.load_state_dict(subset, strict=False)
        self._register_anchor(pl_module, online, source, depth, k)
        self._frozen_names = [
            f"{_prefix(pl_module, online)}vit.{key}" for key in report.loaded
        ]
        self.report = report
        if report.is_complete:
            log.info(report.summary())
        else:
            rank_zero_info(
                f"partial graft (allow_partial): {report.summary()}; missing "
                f"{report.missing[:5]}, shape mismatches "
                f"{[m[0] for m in report.mismatched][:5]}"
            )
        return report

    def _register_anchor(
        self,
        pl_module: Any,
        online: Any,
        source: dict[str, Tensor],
        depth: int,
        k: int,
    ) -> None:
        blocks = k if self.anchor_blocks is None else self.anchor_blocks
        if self.anchor_weight == 0 or blocks == 0:
            return
        if not hasattr(pl_module, "regularizers"):
            raise TypeError(
                f"{type(pl_module).__name__} has no `regularizers` ModuleDict for the anchor."
            )
        prefix = _prefix(pl_module, online)
        names, refs, stages = [], [], []
        params = dict(pl_module.named_parameters())
        for key in grafted_keys(
            list(online.vit.state_dict()), depth, blocks, norm=False
        ):
            name = f"{prefix}vit.{key}"
            param = params.get(name)
            if param is None or not param.requires_grad or key not in source:
                continue  # buffers and frozen tensors do not move: no anchor needed
            names.append(name)
            refs.append(source[key].to(param.dtype))
            stages.append(param_location(key, depth, self.num_stages).stage)
        pl_module.regularizers["graft_anchor"] = AnchorRegularizer(
            names, refs, stages, self.anchor_weight, self.anchor_p
        )

    # -- Lightning hooks -------------------------------------------------------
    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        # Runs before configure_optimizers and before a resumed checkpoint is
        # restored, so a resume overwrites the grafted weights with its own.
        if stage == "fit":
            self.graft(pl_module)

    def on_train_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        if self.freeze_epochs <= 0:
            return
        params = dict(pl_module.named_parameters())
        freeze = trainer.current_epoch < self.freeze_epochs
        for name in self._frozen_names:
            param = params[name]
            self._trainable.setdefault(name, param.requires_grad)
            param.requires_grad_(False if freeze else self._trainable[name])

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        regularizers: Any = getattr(pl_module, "regularizers", {})
        anchor = (
            regularizers["graft_anchor"] if "graft_anchor" in regularizers else None
        )
        if anchor is None or trainer.global_step % self.log_every_n_steps != 0:
            return
        for stage, value in anchor.distances(pl_module).items():
            pl_module.log(f"graft/anchor_distance_stage{stage}", value)


def _prefix(pl_module: nn.Module, encoder: nn.Module) -> str:
    """Name prefix of ``encoder`` inside ``pl_module`` (e.g. ``backbone.``)."""
    for name, module in pl_module.named_modules():
        if module is encoder:
            return f"{name}." if name else ""
    raise ValueError("The online encoder is not a submodule of the method.")
