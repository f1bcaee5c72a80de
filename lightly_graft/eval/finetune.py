"""End-to-end and partial fine-tuning of a pre-trained ViT (paper A.5, Fig 5).

Fine-tuning follows MAE's recipe as the paper does: AdamW, base LR 5e-4 scaled
by batch/256, layer-wise LR decay 0.6 (the paper's value; MAE uses 0.65 for
ViT-B), weight decay 0.05, warmup then cosine, label smoothing 0.1, a linear head
on the CLS feature initialised with std 2e-5. Layer decay and frozen blocks come
from core's :class:`GraftedStageOptimizer` (``layer_decay``, ``frozen_blocks``).
Partial fine-tuning (MAE's protocol, paper Fig 5) freezes the patch embedding
and the first ``b`` blocks. Not reproduced: MAE's RandAugment, mixup/cutmix and
drop path; augmentation is whatever the training loader applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightly_graft.errors import GraftError
from lightly_graft.functional.accuracy import top_accuracy, top_classes
from lightly_graft.modules.backbone import wrap_vit
from lightly_graft.training.optimizer import GraftedStageOptimizer


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyperparameters of :func:`finetune` (defaults: paper A.5 / MAE)."""

    epochs: int = 100
    base_lr: float = 5e-4
    layer_decay: float = 0.6
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    frozen_blocks: int = 0
    label_smoothing: float = 0.1

    def optimizer(self) -> GraftedStageOptimizer:
        return GraftedStageOptimizer(
            name="adamw",
            base_lr=self.base_lr,
            num_stages=1,  # stages play no role with layer decay
            layer_decay=self.layer_decay,
            frozen_blocks=self.frozen_blocks,
            weight_decay=self.weight_decay,
            betas=(0.9, 0.999),
            warmup_epochs=self.warmup_epochs,
        )


class FinetuneClassifier(pl.LightningModule):
    """A ViT encoder (lightly's wrapper around the timm model) plus a linear head.

    Args:
        vit: The pre-trained timm ViT (``num_classes=0``); it is trained in place.
        num_classes: Number of classes of the head.
        settings: Optimisation settings; ``frozen_blocks`` are frozen when the
            optimizer is configured.
        batch_size_per_device: For the batch/256 LR scaling.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        num_classes: int,
        settings: FinetuneSettings,
        batch_size_per_device: int,
    ) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if not 0 <= settings.frozen_blocks <= depth:
            raise GraftError(
                f"cannot freeze {settings.frozen_blocks} blocks of a ViT with "
                f"{depth} blocks; use 0..{depth}."
            )
        self.backbone = wrap_vit(vit, init=False)
        self.head = nn.Linear(vit.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # MAE's head init
        nn.init.zeros_(self.head.bias)
        self.settings = settings
        self.batch_size_per_device = batch_size_per_device
        self.optimizer_spec = settings.optimizer()
        # Freeze now (not only when the optimizer is built): frozen parameters
        # must get no gradient, whether or not an optimizer is configured.
        self.optimizer_spec.freeze(self, self.backbone)

    def forward(self, images: Tensor) -> Tensor:
        """(batch_size, C, H, W) images -> (batch_size, num_classes) logits."""
        return self.head(self.backbone(images))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = batch[0], batch[1]
        loss = F.cross_entropy(
            self(images), targets, label_smoothing=self.settings.label_smoothing
        )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch[0], batch[1]
        top1, top5 = top_accuracy(top_classes(self(images)), targets)
        size = targets.shape[0]
        self.log("val/top1", top1, batch_size=size, sync_dist=True)
        self.log("val/top5", top5, batch_size=size, sync_dist=True)

    def configure_optimizers(self):
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = total_steps / max(self.trainer.max_epochs or 1, 1)
        optimizer, scheduler = self.optimizer_spec.build(
            self,
            self.backbone,
            batch_size=self.batch_size_per_device * self.trainer.world_size,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def finetune(
    vit: VisionTransformer,
    train_loader: DataLoader,
    val_loader: DataLoader,
    num_classes: int,
    settings: FinetuneSettings = FinetuneSettings(),
    *,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    output: str | Path | None = None,
    seed: int = 0,
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tunes ``vit`` with a linear head; returns validation accuracy.

    Args:
        vit: Pre-trained timm ViT (``num_classes=0``); trained in place.
        train_loader: ``(images, labels)`` batches, augmented as desired.
        val_loader: ``(images, labels)`` batches of the evaluation split.
        num_classes: Number of classes.
        settings: Hyperparameters; ``frozen_blocks > 0`` is partial fine-tuning.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        output: Directory for Lightning's CSV logs (none if None).
        seed: Seeds the head and the run (``pl.seed_everything``).
        trainer_kwargs: More ``pl.Trainer`` arguments (e.g. ``limit_train_batches``).

    Returns:
        ``{"top1", "top5"}`` (fractions in [0, 1]) after the last epoch, the
        settings, and the numbers of trainable and frozen parameters.
    """
    if settings.epochs < 1:
        raise GraftError(f"fine-tuning needs epochs >= 1, got {settings.epochs}.")
    pl.seed_everything(seed, verbose=False)
    model = FinetuneClassifier(
        vit, num_classes, settings, batch_size_per_device=train_loader.batch_size or 1
    )
    logger: Any = False
    if output is not None:
        logger = CSVLogger(str(output), name="finetune")
    trainer = pl.Trainer(
        max_epochs=settings.epochs,
        accelerator=accelerator,
        devices=devices,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **(trainer_kwargs or {}),
    )
    trainer.fit(model, train_dataloaders=train_loader)
    (metrics,) = trainer.validate(model, dataloaders=val_loader, verbose=False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {
        "top1": float(metrics["val/top1"]),
        "top5": float(metrics["val/top5"]),
        **asdict(settings),
        "trainable_parameters": trainable,
        "frozen_parameters": frozen,
    }
