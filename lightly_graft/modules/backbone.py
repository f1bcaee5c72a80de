"""The ViT backbone: a timm ``VisionTransformer`` wrapped by lightly's
``MaskedVisionTransformerTIMM``, and the map from parameter names to blocks and
stages that the stage-wise optimizer, the grafting callback and the analysis
tools share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import timm
from lightly.models.modules import MaskedVisionTransformerTIMM
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from lightly_graft.errors import GraftError

#: Parameter names (relative to the ViT) that sit below block 0.
EMBEDDING_NAMES = ("cls_token", "pos_embed", "patch_embed", "reg_token", "mask_token")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class BackboneSpec:
    """A timm ViT: a model name plus keyword overrides.

    ``BackboneSpec("vit_tiny_patch16_224", {"img_size": 28, "patch_size": 4})``
    builds ``timm.create_model("vit_tiny_patch16_224", pretrained=False,
    num_classes=0, img_size=28, patch_size=4)``. Explicit architectures
    (``img_size, patch_size, embed_dim, depth, num_heads``) are overrides of any
    ViT name; :meth:`explicit` uses ``vit_base_patch16_224`` as the base.
    """

    name: str = "vit_base_patch16_224"
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def explicit(
        cls,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        **kwargs: Any,
    ) -> BackboneSpec:
        return cls(
            "vit_base_patch16_224",
            dict(
                img_size=img_size,
                patch_size=patch_size,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                **kwargs,
            ),
        )

    @classmethod
    def coerce(cls, value: BackboneSpec | Mapping[str, Any] | str) -> BackboneSpec:
        """Accepts a spec, a timm name, or a mapping ``{name: ..., **kwargs}`` or
        ``{name: ..., kwargs: {...}}``."""
        if isinstance(value, BackboneSpec):
            return value
        if isinstance(value, str):
            return cls(value, {})
        if isinstance(value, Mapping):
            value = dict(value)
            name = value.pop("name", cls.name)
            kwargs = dict(value.pop("kwargs", {}))
            kwargs.update(value)
            return cls(str(name), kwargs)
        raise GraftError(
            f"A backbone is a timm ViT name or a mapping with 'name' and keyword "
            f"overrides; got {type(value).__name__}: {value!r}."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, stored in checkpoints and ``backbone.json``."""
        return {"name": self.name, "kwargs": dict(self.kwargs)}


def build_vit(spec: BackboneSpec | Mapping[str, Any] | str) -> VisionTransformer:
    """Builds the timm ViT of a spec, without a classification head and without
    downloading weights.

    Raises:
        GraftError: if the name is not a timm ViT or an override is invalid.
    """
    spec = BackboneSpec.coerce(spec)
    kwargs = {k: v for k, v in spec.kwargs.items() if k != "num_classes"}
    if spec.name not in timm.list_models():
        raise GraftError(
            f"Unknown timm model '{spec.name}'. Use a ViT name from "
            "`timm.list_models('vit_*')`, e.g. 'vit_tiny_patch16_224', "
            "'vit_small_patch16_224', 'vit_base_patch16_224'."
        )
    try:
        model = timm.create_model(spec.name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as error:
        raise GraftError(
            f"Invalid backbone overrides {kwargs} for '{spec.name}': {error}"
        ) from None
    if not isinstance(model, VisionTransformer):
        raise GraftError(
            f"'{spec.name}' builds a {type(model).__name__}; lightly-graft needs a "
            "timm VisionTransformer (a 'vit_*' model)."
        )
    if model.cls_token is None:
        raise GraftError(f"'{spec.name}' has no class token; pick a ViT with one.")
    return model


def wrap_vit(vit: VisionTransformer, init: bool = True) -> MaskedVisionTransformerTIMM:
    """Wraps a timm ViT in lightly's ``MaskedVisionTransformerTIMM``.

    Args:
        vit: The timm model.
        init: If True, lightly's MAE initialisation and a fixed (frozen) 2D
            sin-cos position embedding, as MAE and MoCo v3 train from scratch.
            If False, both initialisations are skipped: use it when weights are
            loaded right after.
    """
    if init:
        return MaskedVisionTransformerTIMM(vit=vit, pos_embed_initialization="sincos")
    return MaskedVisionTransformerTIMM(
        vit=vit, weight_initialization="skip", pos_embed_initialization="skip"
    )


def check_stages(depth: int, num_stages: int) -> int:
    """Returns the number of blocks per stage, or raises if depth does not split."""
    if num_stages <= 0 or depth % num_stages != 0:
        raise ValueError(
            f"A ViT of depth {depth} cannot be split into {num_stages} equal "
            f"stages; use a number of stages that divides {depth} "
            f"(e.g. {[n for n in range(1, depth + 1) if depth % n == 0]})."
        )
    return depth // num_stages


@dataclass(frozen=True)
class ParamLocation:
    """Where a parameter sits: ``block`` -1 = embeddings, ``depth`` = top (final
    norm, heads, decoder); ``stage`` in ``[0, num_stages)``, ``num_stages`` = top."""

    block: int
    stage: int
    num_stages: int

    @property
    def is_top(self) -> bool:
        return self.stage == self.num_stages


def param_location(name: str, depth: int, num_stages: int) -> ParamLocation:
    """Maps a parameter name relative to the ViT to its block and stage.

    ``name`` is a timm name (``blocks.3.attn.qkv.weight``) or one relative to
    lightly's wrapper (``vit.blocks.3.attn.qkv.weight``, ``mask_token``).
    Embeddings (``cls_token``, ``pos_embed``, ``patch_embed.*``) sit below block
    0 and belong to stage 0; ``norm.*`` and anything else sits on top.

    Raises:
        ValueError: if ``depth`` is not divisible by ``num_stages``.
    """
    per_stage = check_stages(depth, num_stages)
    name = name.removeprefix("vit.")
    match = _BLOCK.match(name)
    if match is not None:
        block = int(match.group(1))
        return ParamLocation(block, block // per_stage, num_stages)
    if name.split(".")[0] in EMBEDDING_NAMES:
        return ParamLocation(-1, 0, num_stages)
    return ParamLocation(depth, num_stages, num_stages)


def locate_parameters(
    model: nn.Module, encoder: MaskedVisionTransformerTIMM, num_stages: int
) -> dict[str, ParamLocation]:
    """Locates every parameter of ``model``: those of ``encoder`` by
    :func:`param_location`, all others (heads, decoder, norms of other modules) on
    top. Names are ``model.named_parameters()`` names."""
    depth = len(encoder.vit.blocks)
    by_id = {
        id(p): param_location(n, depth, num_stages)
        for n, p in encoder.named_parameters()
    }
    top = ParamLocation(depth, num_stages, num_stages)
    return {n: by_id.get(id(p), top) for n, p in model.named_parameters()}
