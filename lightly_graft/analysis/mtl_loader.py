"""The MTL model whose two losses the gradient-conflict analysis compares.

Eq. 3 needs both the MIM and the CL loss on one encoder: the ``mtl`` zoo method
(``loss_terms(views) -> {"mim": ..., "cl": ...}``). A Lightning checkpoint of that
method carries its projector, predictor and decoder; any other checkpoint (a
run's ``backbone.pt``, a MoCo v3 or MAE checkpoint) only has the encoder, so the
method is built around it with freshly initialised heads and decoder. The
result says which, so that plots and CSVs can say it too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from lightly_graft import zoo
from lightly_graft.errors import GraftError
from lightly_graft.modules.backbone import BackboneSpec
from lightly_graft.training.checkpoints import read_checkpoint

HEADS_FROM_CHECKPOINT = "MTL heads from the checkpoint"
FRESH_HEADS = "fresh MTL heads (random init)"


@dataclass(frozen=True)
class MTLModel:
    """A module with ``loss_terms`` and ``backbone.vit``, and its transform.

    Attributes:
        module: The method (LightningModule) holding the checkpoint's encoder.
        heads: ``HEADS_FROM_CHECKPOINT`` or ``FRESH_HEADS``.
        transform_factory: ``make_transform(input_size=..., normalize=...)`` of
            the method: PIL image -> the list of views ``loss_terms`` takes.
    """

    module: Any
    heads: str
    transform_factory: Callable[..., Any]


def mtl_for_checkpoint(
    path: str | Path,
    format: str,
    vit: VisionTransformer,
    spec: BackboneSpec,
    *,
    method: str | type = "mtl",
    batch_size: int = 64,
) -> MTLModel:
    """Builds the MTL method for a checkpoint whose backbone is already loaded.

    Args:
        path: The checkpoint file.
        format: Its format; only ``lightning`` checkpoints can carry heads.
        vit: The checkpoint's encoder (loaded by ``load_backbone``).
        spec: Its architecture.
        method: Zoo name of the method, or the class itself (its module must
            define ``make_transform``, as zoo methods' modules do).
        batch_size: ``batch_size_per_device`` of a freshly built method.

    Returns:
        The model; heads from the checkpoint when it is a Lightning checkpoint
        whose state dict loads exactly into the method built from its
        hyper-parameters, fresh heads otherwise.

    Raises:
        GraftError: Unknown method, or a method without ``loss_terms``.
    """
    transform_factory: Callable[..., Any] | None
    if isinstance(method, str):
        entry = zoo.get(method)
        cls: type = entry.cls
        transform_factory = entry.transform_factory
    else:
        cls = method
        transform_factory = getattr(sys.modules[cls.__module__], "make_transform", None)
        if transform_factory is None:
            raise GraftError(
                f"Method {cls.__name__}'s module {cls.__module__} defines no "
                f"make_transform(input_size=..., normalize=...)."
            )
    if not callable(getattr(cls, "loss_terms", None)):
        raise GraftError(
            f"Method {cls.__name__} has no loss_terms(views): gradient conflict needs "
            f"a method with two losses, e.g. 'mtl'."
        )
    if format == "lightning":
        module = _from_lightning(path, cls)
        if module is not None:
            return MTLModel(module, HEADS_FROM_CHECKPOINT, transform_factory)
    module = cls(
        batch_size_per_device=batch_size, num_classes=0, backbone=spec.to_dict()
    )
    # Every encoder starts from the checkpoint (MoCo's momentum encoder too, as
    # at the start of a grafted run); heads and decoder keep their fresh init.
    encoders = module.encoders() if hasattr(module, "encoders") else {}
    for encoder in list(encoders.values()) or [module.backbone]:
        encoder.vit.load_state_dict(vit.state_dict(), strict=True)
    return MTLModel(module, FRESH_HEADS, transform_factory)


def _from_lightning(path: str | Path, cls: type) -> nn.Module | None:
    """The method restored from a Lightning checkpoint, or None if it is not one
    of ``cls`` (its hyper-parameters do not build ``cls`` or its state dict does
    not load exactly)."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    try:
        module = cls(**hparams)
        result = module.load_state_dict(checkpoint["state_dict"], strict=False)
    except (TypeError, ValueError, RuntimeError, KeyError):
        return None
    if result.missing_keys or result.unexpected_keys:
        return None
    return module
