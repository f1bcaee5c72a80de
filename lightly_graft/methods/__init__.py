"""The zoo's methods; importing this package registers them (each module
registers its classes with ``@zoo.method``)."""

from __future__ import annotations

from lightly_graft.methods.base import LossOutput, SSLMethod
from lightly_graft.methods.ccmim import CCMIM
from lightly_graft.methods.grafted_moco import GraftedMoCo
from lightly_graft.methods.grafted_vicreg import GraftedVICReg
from lightly_graft.methods.mae import MAE
from lightly_graft.methods.masked_moco import MaskedBYOL, MaskedMoCo
from lightly_graft.methods.mtl import MTL

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
