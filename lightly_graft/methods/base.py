"""SSLMethod: what every zoo method shares.

It follows the contract of lightly's own benchmark methods
(``benchmarks/imagenet/vitb16/*.py``): keyword constructor with
``batch_size_per_device`` and ``num_classes``, an ``OnlineLinearClassifier`` on
detached features trained alongside when labels are present, the online
classifier's accuracy logged in ``validation_step``, and a module-level default
``transform`` in each method's module. On top it adds what the grafting
callbacks need: ``encoders()``, ``regularizers`` and stage-wise optimizers, and
a ``grafting`` argument whose callback the method returns from
``configure_callbacks()``: a benchmark script that builds the Trainer itself (as
lightly's does, inside ``pretrain()``) then grafts from a ``METHODS`` entry alone,
e.g. ``functools.partial(GraftedMoCo, grafting=Grafting(...))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import OnlineLinearClassifier
from torch import Tensor, nn

from lightly_graft.modules.backbone import BackboneSpec, build_vit, wrap_vit
from lightly_graft.signatures import keyword_arguments
from lightly_graft.training.grafting import Grafting
from lightly_graft.training.optimizer import GraftedStageOptimizer

BackboneLike = BackboneSpec | Mapping[str, Any] | str
OptimizerLike = GraftedStageOptimizer | Mapping[str, Any] | None


@dataclass
class LossOutput:
    """What ``training_loss`` returns.

    Attributes:
        loss: The scalar self-supervised loss.
        features: (batch_size, embed_dim) backbone features of one view for the
            online classifier (detached by the base class), or None.
        logs: Extra scalars, logged as ``train/<key>``.
    """

    loss: Tensor
    features: Tensor | None = None
    logs: dict[str, Tensor | float] = field(default_factory=dict)


class SSLMethod(pl.LightningModule):
    """Base of the zoo methods.

    Class attribute ``num_views``: how many views its transform yields (and
    ``training_loss`` takes).

    Args:
        batch_size_per_device: Batch size on each device (LR scaling uses the
            global batch).
        num_classes: Classes of the online linear classifier; 0 disables it.
        backbone: timm ViT name, :class:`BackboneSpec` or mapping (default
            ViT-B/16).
        optimizer: :class:`GraftedStageOptimizer` (or its fields as a mapping);
            None = the method's paper default (``default_optimizer()``).
        grafting: A :class:`~lightly_graft.training.grafting.Grafting` callback,
            returned by :meth:`configure_callbacks` (Lightning adds it to the
            Trainer's callbacks at ``fit``, in place of any other ``Grafting``
            there), so it grafts without being among the Trainer's callbacks.
            None: no graft. Not a hyperparameter: checkpoints do not store it.

    A subclass declares the arguments it adds (or whose default it changes)
    and passes the others on with ``**kwargs``; its docstring documents only
    its own (:mod:`lightly_graft.signatures` reads the whole set).
    """

    def __init__(
        self,
        *,
        batch_size_per_device: int,
        num_classes: int,
        backbone: BackboneLike = "vit_base_patch16_224",
        optimizer: OptimizerLike = None,
        grafting: Grafting | None = None,
    ) -> None:
        super().__init__()
        if batch_size_per_device <= 0:
            raise ValueError(
                f"batch_size_per_device must be positive, got {batch_size_per_device}."
            )
        if grafting is not None and not isinstance(grafting, Grafting):
            raise TypeError(
                f"grafting must be a lightly_graft Grafting callback or None, got "
                f"{type(grafting).__name__}: build it as Grafting(checkpoint, "
                "format=...)."
            )
        self.grafting = grafting
        self.batch_size_per_device = batch_size_per_device
        self.num_classes = num_classes
        self.backbone_spec = BackboneSpec.coerce(backbone)
        self.optimizer_spec = GraftedStageOptimizer.coerce(
            optimizer, self.default_optimizer()
        )
        self.backbone = wrap_vit(build_vit(self.backbone_spec))
        # lightly's wrapper has a mask token for methods that replace masked
        # patches in the encoder (SimMIM); ours drop them, so it is not trained.
        self.backbone.mask_token.requires_grad_(False)
        self.embed_dim: int = self.backbone.vit.embed_dim
        self.regularizers = nn.ModuleDict()
        self.online_classifier = (
            OnlineLinearClassifier(
                feature_dim=self.embed_dim,
                num_classes=num_classes,
                topk=tuple(sorted({1, min(5, num_classes)})),
            )
            if num_classes > 0
            else None
        )

    num_views: ClassVar[int] = 2

    # -- hooks for subclasses ------------------------------------------------
    @classmethod
    def default_optimizer(cls) -> GraftedStageOptimizer:
        return GraftedStageOptimizer()

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        raise NotImplementedError

    def encoders(self) -> dict[str, nn.Module]:
        """Every ViT that takes grafted weights; the online one first."""
        return {"backbone": self.backbone}

    def store_hparams(self) -> None:
        """Saves the constructor arguments, with the backbone and optimizer as
        plain data so checkpoints load with ``weights_only=True``. Call at the end
        of a subclass ``__init__``.

        Lightning's frame inspection collects the ``__init__`` arguments of every
        class in the hierarchy; only those the concrete class takes are kept, so
        ``load_from_checkpoint`` can rebuild a subclass with another signature
        (``MaskedBYOL(MaskedMoCo(GraftedMoCo))``).
        """
        self.save_hyperparameters(ignore=["backbone", "optimizer", "grafting"])
        accepted = {arg.name for arg in keyword_arguments(type(self))}
        self.remove_ignored_hparams([k for k in self.hparams if k not in accepted])
        self.hparams["backbone"] = self.backbone_spec.to_dict()
        self.hparams["optimizer"] = self.optimizer_spec.to_dict()

    # -- shared behaviour ----------------------------------------------------
    def configure_callbacks(self) -> list[pl.Callback]:
        """The ``grafting`` callback given to the constructor, if any."""
        return [] if self.grafting is None else [self.grafting]

    def forward(self, images: Tensor) -> Tensor:
        """(batch_size, C, H, W) -> (batch_size, embed_dim) pooled features."""
        return self.backbone(images)

    @property
    def global_batch_size(self) -> int:
        trainer = self._trainer
        if trainer is None:
            return self.batch_size_per_device
        return (
            self.batch_size_per_device
            * trainer.world_size
            * trainer.accumulate_grad_batches
        )

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        views, targets = unpack_batch(batch)
        out = self.training_loss(views)
        loss = out.loss
        batch_size = len(views[0])
        self.log("train/ssl_loss", out.loss, batch_size=batch_size)
        for name, regularizer in self.regularizers.items():
            value = regularizer(self)
            loss = loss + value
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        for key, value in out.logs.items():
            self.log(f"train/{key}", value, batch_size=batch_size)
        if (
            self.online_classifier is not None
            and targets is not None
            and out.features is not None
        ):
            cls_loss, cls_log = self.online_classifier.training_step(
                (out.features.detach(), targets), batch_idx
            )
            self.log_dict(cls_log, sync_dist=True, batch_size=batch_size)
            loss = loss + cls_loss
        return loss

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor | None:
        if self.online_classifier is None:
            return None
        images, targets = batch[0], batch[1]
        features = self.forward(images)
        cls_loss, cls_log = self.online_classifier.validation_step(
            (features.detach(), targets), batch_idx
        )
        self.log_dict(cls_log, prog_bar=True, sync_dist=True, batch_size=len(targets))
        return cls_loss

    def setup(self, stage: str) -> None:
        # Frozen stages get requires_grad=False here, after the Grafting callback's
        # setup and before DDP wraps the model (configure_optimizers runs after
        # the wrap, and DDP would wait for gradients of frozen parameters).
        if stage == "fit":
            self.optimizer_spec.freeze(self, self.backbone)

    def configure_optimizers(self) -> Any:
        trainer = self.trainer
        total = int(trainer.estimated_stepping_batches)
        epochs = (
            trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        )
        extra = []
        if self.online_classifier is not None:
            spec = self.optimizer_spec
            extra.append(
                {
                    "name": "online_classifier",
                    "params": list(self.online_classifier.parameters()),
                    "lr": spec.stage_base_lr(spec.num_stages),
                    "weight_decay": 0.0,
                }
            )
        optimizer, scheduler = self.optimizer_spec.build(
            self, self.backbone, self.global_batch_size, total, total / epochs, extra
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def unpack_batch(batch: Sequence[Any]) -> tuple[list[Tensor], Tensor | None]:
    """``(views, targets, ...)`` or ``(views,)`` -> (list of views, targets or
    None). Targets are None when absent or negative (unlabelled data)."""
    views = batch[0]
    if isinstance(views, Tensor):
        views = [views]
    targets = batch[1] if len(batch) > 1 else None
    if not isinstance(targets, Tensor) or (targets < 0).any():
        targets = None
    return list(views), targets


def move_momentum(
    pairs: Sequence[tuple[nn.Module, nn.Module]], momentum: float
) -> None:
    """EMA update of each (online, momentum) pair with lightly's ``update_momentum``."""
    from lightly.models.utils import update_momentum

    with torch.no_grad():
        for online, ema in pairs:
            update_momentum(online, ema, momentum)
