"""The zoo's methods; importing this package registers them."""

from __future__ import annotations

from lightly_graft import zoo
from lightly_graft.methods import (
    ccmim,
    grafted_moco,
    grafted_vicreg,
    mae,
    masked_moco,
    mtl,
)
from lightly_graft.methods.base import LossOutput, SSLMethod
from lightly_graft.methods.ccmim import CCMIM
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.methods.grafted_vicreg import GraftedVICReg
from lightly_graft.methods.mae import MAE
from lightly_graft.methods.masked_moco import MaskedBYOL, MaskedMoCo
from lightly_graft.methods.mtl import MTL

zoo.register(
    "mae",
    MAE,
    transform_factory=mae.make_transform,
    transform=mae.transform,
    batched_transform_factory=mae.make_batched_transform,
    description="MAE masked image modelling (step i of Layer Grafted Pre-training)",
    recipe="recipes/quickstart.yaml",
)
zoo.register(
    "grafted_moco",
    GraftedMoCo,
    transform_factory=grafted_moco.make_transform,
    transform=grafted_moco.transform,
    batched_transform_factory=grafted_moco.make_batched_transform,
    description="MoCo v3 with stage-wise LRs on grafted MIM blocks (step ii)",
    recipe="recipes/quickstart.yaml",
)
zoo.register(
    "grafted_vicreg",
    GraftedVICReg,
    transform_factory=grafted_vicreg.make_transform,
    transform=grafted_vicreg.transform,
    batched_transform_factory=grafted_vicreg.make_batched_transform,
    description="VICReg with stage-wise LRs on grafted MIM blocks (Table 4)",
    recipe="recipes/grafted_vicreg.yaml",
)

zoo.register(
    "masked_moco",
    MaskedMoCo,
    transform_factory=masked_moco.make_transform,
    transform=masked_moco.transform,
    batched_transform_factory=masked_moco.make_batched_transform,
    description="Masked MoCo: MoCo v3 on n=8 token chunks per view, LayerNorm heads",
    recipe="recipes/masked_moco.yaml",
)
zoo.register(
    "masked_byol",
    MaskedBYOL,
    transform_factory=masked_moco.make_transform,
    transform=masked_moco.transform,
    batched_transform_factory=masked_moco.make_batched_transform,
    description="Masked BYOL: BYOL's loss on n=8 token chunks per view",
    recipe="recipes/masked_byol.yaml",
)
zoo.register(
    "ccmim",
    CCMIM,
    transform_factory=ccmim.make_transform,
    transform=ccmim.transform,
    batched_transform_factory=ccmim.make_batched_transform,
    description="ccMIM: masks the patches the CLS attends to, + CLS contrast",
    recipe="recipes/ccmim.yaml",
)
zoo.register(
    "mtl",
    MTL,
    transform_factory=mtl.make_transform,
    transform=mtl.transform,
    batched_transform_factory=mtl.make_batched_transform,
    description="MTL ablation: MAE loss + MoCo v3 loss on one encoder (Table 1)",
    recipe="recipes/mtl.yaml",
)

__all__ = [
    "CCMIM",
    "MAE",
    "MTL",
    "GraftedMoCo",
    "GraftedVICReg",
    "LossOutput",
    "MaskedBYOL",
    "MaskedMoCo",
    "SSLMethod",
]
