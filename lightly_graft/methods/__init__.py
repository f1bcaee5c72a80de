"""The zoo's methods; importing this package registers them."""

from __future__ import annotations

from lightly_graft import zoo
from lightly_graft.methods import grafted_moco, grafted_vicreg, mae
from lightly_graft.methods.base import LossOutput, SSLMethod
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.methods.grafted_vicreg import GraftedVICReg
from lightly_graft.methods.mae import MAE

zoo.register(
    "mae",
    MAE,
    transform_factory=mae.make_transform,
    transform=mae.transform,
    description="MAE masked image modelling (step i of Layer Grafted Pre-training)",
    recipe="recipes/quickstart.yaml",
)
zoo.register(
    "grafted_moco",
    GraftedMoCo,
    transform_factory=grafted_moco.make_transform,
    transform=grafted_moco.transform,
    description="MoCo v3 with stage-wise LRs on grafted MIM blocks (step ii)",
    recipe="recipes/quickstart.yaml",
)
zoo.register(
    "grafted_vicreg",
    GraftedVICReg,
    transform_factory=grafted_vicreg.make_transform,
    transform=grafted_vicreg.transform,
    description="VICReg with stage-wise LRs on grafted MIM blocks (Table 4)",
    recipe="recipes/grafted_vicreg.yaml",
)

__all__ = ["MAE", "GraftedMoCo", "GraftedVICReg", "LossOutput", "SSLMethod"]
