"""GraftedMoCo: step ii of Layer Grafted Pre-training with MoCo v3.

An online ViT + projector + predictor and a momentum ViT + projector (cosine
momentum 0.99 -> 1), MoCo v3's symmetric InfoNCE (or any two-view objective of
the registry), stage-wise LRs ``[1.5e-5, 1.5e-5, 1.5e-4]`` (Layer Grafted A.5).
Grafting the MIM weights is the :class:`~lightly_graft.training.grafting.Grafting`
callback's job (among the Trainer's callbacks, or given as ``grafting=``); without
it this is plain MoCo v3 (ViT).

Reference: facebookresearch/moco-v3 ``moco/builder.py`` (MoCo_ViT) and
VITA-Group/layerGraftedPretraining_ICLR23.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lightly.models.utils import deactivate_requires_grad
from torch import Tensor, nn

from lightly_graft import zoo
from lightly_graft.functional.schedules import momentum_schedule
from lightly_graft.methods.base import LossOutput, SSLMethod, move_momentum
from lightly_graft.methods.transforms import two_batched_views, two_view_transform
from lightly_graft.modules.heads import Norm, mlp_head
from lightly_graft.modules.objectives import accepted_arguments, build_objective
from lightly_graft.training.optimizer import GraftedStageOptimizer

make_transform = two_view_transform
#: The same views made from a batch on the training device (kornia).
make_batched_transform = two_batched_views
#: Default transform (224 px), as in lightly's benchmark modules.
transform = make_transform()


def objective_kwargs(
    name: str, given: Mapping[str, Any], **defaults: Any
) -> dict[str, Any]:
    """The defaults an objective accepts, overridden by ``given``."""
    accepted = accepted_arguments(name)
    kwargs = {k: v for k, v in defaults.items() if k in accepted}
    kwargs.update(given)
    return kwargs


@zoo.method("grafted_moco", recipe="recipes/quickstart.yaml")
class GraftedMoCo(SSLMethod):
    """MoCo v3 for ViTs with stage-wise LRs on grafted MIM blocks (step ii).

    Args:
        projection_hidden_dim: Projector/predictor hidden width (4096).
        projection_dim: Output width (256).
        projection_layers: Projector layers (3).
        prediction_layers: Predictor layers (2).
        head_norm: ``batch`` (MoCo v3) or ``layer`` norm in the heads.
        predictor_last_norm: Norm after the predictor's last layer (MoCo v3:
            yes; BYOL: no, Masked MoCo §3.1).
        temperature: InfoNCE tau (0.2).
        objective: Two-view objective name (``contrastive``, ``byol``).
        objective_args: Extra arguments of the objective.
        momentum_start: Momentum at step 0 (0.99), cosine to ``momentum_end`` (1).
        freeze_patch_embed: MoCo v3's ``stop_grad_conv1``: the patch embedding is
            not trained (random, or the grafted MIM weights).
        gather_distributed: Gather keys across ranks for the negatives.
        **kwargs: :class:`~lightly_graft.methods.base.SSLMethod`'s
            (``batch_size_per_device``, ``num_classes``, ``backbone``,
            ``optimizer``: default AdamW, stage base LRs [1.5e-5, 1.5e-5,
            1.5e-4], wd 0.1, 40 warmup epochs (of 300), LRs scaled by batch/256;
            ``grafting``).
    """

    def __init__(
        self,
        *,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        projection_layers: int = 3,
        prediction_layers: int = 2,
        head_norm: Norm = "batch",
        predictor_last_norm: bool = True,
        temperature: float = 0.2,
        objective: str = "contrastive",
        objective_args: Mapping[str, Any] | None = None,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        freeze_patch_embed: bool = True,
        gather_distributed: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end
        if freeze_patch_embed:
            self.backbone.vit.patch_embed.requires_grad_(False)
        self.projector = mlp_head(
            self.embed_dim,
            projection_hidden_dim,
            projection_dim,
            projection_layers,
            head_norm,
        )
        self.predictor = mlp_head(
            projection_dim,
            projection_hidden_dim,
            projection_dim,
            prediction_layers,
            head_norm,
            last_norm=predictor_last_norm,
        )
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projector_momentum = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projector_momentum)
        self.objective = self.make_objective(
            build_objective(
                objective,
                **objective_kwargs(
                    objective,
                    objective_args or {},
                    temperature=temperature,
                    gather_distributed=gather_distributed,
                ),
            )
        )
        self.store_hparams()

    def make_objective(self, objective: nn.Module) -> nn.Module:
        """The objective of the queries and keys, from the two-view one
        (a subclass that pairs other tensors wraps it)."""
        return objective

    @classmethod
    def default_optimizer(cls) -> GraftedStageOptimizer:
        return GraftedStageOptimizer(
            stage_lrs=(1.5e-5, 1.5e-5, 1.5e-4),
            num_stages=3,
            weight_decay=0.1,
            betas=(0.9, 0.999),
            warmup_epochs=40,
        )

    def encoders(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "backbone_momentum": self.backbone_momentum}

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.backbone_momentum),
            (self.projector, self.projector_momentum),
        ]

    def current_momentum(self) -> float:
        return momentum_schedule(
            self.global_step,
            int(self.trainer.estimated_stepping_batches),
            self.momentum_start,
            self.momentum_end,
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Once per optimizer step, before the keys are computed (MoCo v3 order).
        if batch_idx % self.trainer.accumulate_grad_batches == 0:
            momentum = self.current_momentum()
            move_momentum(self.momentum_pairs(), momentum)
            self.log("train/momentum", momentum)

    def query(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(features, prediction)`` of the online branch."""
        features = self.backbone(images)
        return features, self.predictor(self.projector(features))

    def key(self, images: Tensor) -> Tensor:
        return self.projector_momentum(self.backbone_momentum(images)).detach()

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        # Each view goes through the heads separately: BatchNorm statistics per
        # view, as in MoCo v3.
        outputs = [self.query(view) for view in views[:2]]
        keys = [self.key(view) for view in views[:2]]
        loss = self.objective([q for _, q in outputs], keys)
        return LossOutput(loss=loss, features=outputs[0][0])
