"""lightly-graft: Layer Grafted Pre-training, Masked MoCo and ccMIM for lightly."""

from __future__ import annotations

from lightly_graft import zoo
from lightly_graft.methods import MAE, GraftedMoCo, GraftedVICReg, SSLMethod
from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.recipes import load_recipe
from lightly_graft.training.grafting import Grafting, GraftReport
from lightly_graft.training.knn_monitor import KNNMonitor
from lightly_graft.training.optimizer import GraftedStageOptimizer

__version__ = "0.1.0"

__all__ = [
    "MAE",
    "BackboneSpec",
    "GraftReport",
    "GraftedMoCo",
    "GraftedStageOptimizer",
    "GraftedVICReg",
    "Grafting",
    "KNNMonitor",
    "SSLMethod",
    "build_vit",
    "load_recipe",
    "zoo",
]
