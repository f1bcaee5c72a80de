"""GraftedVICReg: Layer Grafted Pre-training with VICReg as the CL step (Table 4).

Same backbone and stage-wise LRs as :class:`GraftedMoCo`, VICReg's expander and
loss (lightly's ``VICRegLoss``, 25/25/1), no momentum encoder.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightly_graft import zoo
from lightly_graft.methods.base import LossOutput, SSLMethod
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.methods.transforms import two_batched_views, two_view_transform
from lightly_graft.modules.heads import vicreg_expander
from lightly_graft.modules.objectives import build_objective
from lightly_graft.training.optimizer import GraftedStageOptimizer

make_transform = two_view_transform
make_batched_transform = two_batched_views
#: Default transform (224 px), as in lightly's benchmark modules.
transform = make_transform()


@zoo.method("grafted_vicreg", recipe="recipes/grafted_vicreg.yaml")
class GraftedVICReg(SSLMethod):
    """VICReg with stage-wise LRs on grafted MIM blocks (Table 4).

    Args:
        expander_hidden_dim: Expander hidden width (8192).
        expander_dim: Expander output width (8192).
        lambda_param: Invariance weight (25).
        mu_param: Variance weight (25).
        nu_param: Covariance weight (1).
        freeze_patch_embed: Do not train the patch embedding (as GraftedMoCo).
        gather_distributed: Gather embeddings across ranks.
        **kwargs: :class:`~lightly_graft.methods.base.SSLMethod`'s
            (``optimizer`` default: GraftedMoCo's; the paper gives no
            VICReg-specific settings for Table 4).
    """

    def __init__(
        self,
        *,
        expander_hidden_dim: int = 8192,
        expander_dim: int = 8192,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        freeze_patch_embed: bool = True,
        gather_distributed: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if freeze_patch_embed:
            self.backbone.vit.patch_embed.requires_grad_(False)
        self.expander = vicreg_expander(
            self.embed_dim, expander_hidden_dim, expander_dim
        )
        self.objective = build_objective(
            "vicreg",
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=nu_param,
            gather_distributed=gather_distributed,
        )
        self.store_hparams()

    @classmethod
    def default_optimizer(cls) -> GraftedStageOptimizer:
        return GraftedMoCo.default_optimizer()

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        features = [self.backbone(view) for view in views[:2]]
        embeddings = [self.expander(f) for f in features]
        loss = self.objective(embeddings, embeddings)
        return LossOutput(loss=loss, features=features[0])
