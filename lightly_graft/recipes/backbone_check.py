"""Checks of a recipe's backbone: the timm name, its keyword arguments, the shapes.

The ViT is built on PyTorch's ``meta`` device: timm validates the name and every
keyword argument, and we read the depth and image size, without allocating
weights (about 0.2 s for ViT-L).
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, NamedTuple

from lightly_graft.errors import did_you_mean, format_options
from lightly_graft.recipes.methods import stage_optimizer
from lightly_graft.recipes.schema import Recipe
from lightly_graft.recipes.validation import Invalid, as_lists, as_tuples


class BackboneShape(NamedTuple):
    """What the recipe layer needs to know about a ViT."""

    img_size: int
    depth: int


def inspect_backbone(name: str, kwargs: dict) -> BackboneShape:
    """Builds the ViT on the meta device and returns its shape; raises
    :class:`Invalid` for an unknown name, a bad keyword argument or not a ViT."""
    return _inspect(name, tuple(sorted(as_tuples(kwargs).items())))


@functools.lru_cache(maxsize=32)
def _inspect(name: str, items: tuple) -> BackboneShape:
    import timm
    import torch
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(name):
        raise Invalid(
            "backbone.name",
            f"'{name}' is not a timm model; ViTs are listed by "
            "`python -c \"import timm; print(timm.list_models('vit_*'))\"`"
            + did_you_mean(name, timm.list_models("vit*")),
        )
    kwargs: dict[str, Any] = as_lists(dict(items))
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        raise _build_error(name, kwargs, error) from None
    if not isinstance(model, VisionTransformer):
        raise Invalid(
            "backbone.name",
            f"'{name}' is a {type(model).__name__}; lightly-graft needs a timm "
            "VisionTransformer (a vit_* model)",
        )
    img_size, patch_size = model.patch_embed.img_size, model.patch_embed.patch_size
    if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
        message = (
            f"img_size {img_size[0]} is not a multiple of patch_size {patch_size[0]}"
        )
        raise Invalid("backbone", message)
    return BackboneShape(int(img_size[0]), len(model.blocks))


def _build_error(name: str, kwargs: dict, error: Exception) -> Invalid:
    from timm.models.vision_transformer import VisionTransformer

    match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if not match:
        return Invalid("backbone", f"timm cannot build '{name}' with {kwargs}: {error}")
    parameters = inspect.signature(VisionTransformer.__init__).parameters
    valid = [p for p in parameters if p not in ("self", "num_classes")]
    return Invalid(
        f"backbone.{match.group(1)}",
        f"is not a keyword argument of timm's VisionTransformer ('{name}'); "
        f"valid keys: {format_options(valid)}" + did_you_mean(match.group(1), valid),
    )


def check_backbone(recipe: Recipe) -> None:
    """Raises :class:`Invalid` for the first shape that does not fit the stages."""
    shape = inspect_backbone(recipe.backbone.name, recipe.backbone.kwargs)
    size, depth = recipe.data.image_size, shape.depth
    if size is not None and size != shape.img_size:
        raise Invalid(
            "data.image_size",
            f"is {size} but the backbone's img_size is {shape.img_size}: they must "
            "match (or leave data.image_size out)",
        )
    for i, stage in enumerate(recipe.stages):
        where = f"stages[{i}]"
        stages = stage_optimizer(stage, where).num_stages
        if depth % stages:
            raise Invalid(
                f"{where}.optimizer.num_stages",
                f"is {stages}, but the backbone's {depth} blocks do not split "
                f"into {stages} equal stages; use a divisor of {depth}",
            )
        for key, section in (("graft", stage.graft), ("anchor", stage.anchor)):
            blocks = getattr(section, "num_blocks", None)
            if blocks is not None and blocks > depth:
                raise Invalid(
                    f"{where}.{key}.num_blocks",
                    f"is {blocks}, but the backbone has {depth} blocks",
                )
