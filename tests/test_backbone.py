from __future__ import annotations

import pytest
import torch

from lightly_graft.errors import GraftError
from lightly_graft.modules.backbone import (
    BackboneSpec,
    build_vit,
    locate_parameters,
    param_location,
    wrap_vit,
)


@pytest.mark.parametrize(
    "name, block, stage",
    [
        ("cls_token", -1, 0),
        ("pos_embed", -1, 0),
        ("patch_embed.proj.weight", -1, 0),
        ("vit.patch_embed.proj.bias", -1, 0),
        ("mask_token", -1, 0),
        ("blocks.0.attn.qkv.weight", 0, 0),
        ("blocks.3.norm1.weight", 3, 0),
        ("vit.blocks.4.mlp.fc1.weight", 4, 1),
        ("blocks.11.mlp.fc2.bias", 11, 2),
        ("norm.weight", 12, 3),
        ("vit.norm.bias", 12, 3),
    ],
)
def test_param_location__vit_b(name: str, block: int, stage: int) -> None:
    loc = param_location(name, depth=12, num_stages=3)
    assert (loc.block, loc.stage) == (block, stage)
    assert loc.is_top == (stage == 3)


@pytest.mark.parametrize("depth, num_stages", [(12, 5), (24, 7), (6, 4)])
def test_param_location__indivisible_depth_raises(depth: int, num_stages: int) -> None:
    with pytest.raises(
        ValueError, match=f"depth {depth} cannot be split into {num_stages}"
    ):
        param_location("blocks.0.attn.qkv.weight", depth, num_stages)


def test_locate_parameters__heads_on_top(tiny_backbone: dict) -> None:
    encoder = wrap_vit(build_vit(tiny_backbone))
    model = torch.nn.ModuleDict({"backbone": encoder, "head": torch.nn.Linear(32, 4)})
    locations = locate_parameters(model, encoder, num_stages=3)
    assert set(locations) == {n for n, _ in model.named_parameters()}
    assert locations["head.weight"].is_top
    assert locations["backbone.vit.blocks.2.attn.qkv.weight"].stage == 2
    assert locations["backbone.vit.cls_token"].block == -1
    assert locations["backbone.vit.norm.weight"].is_top


def test_build_vit__explicit_and_named_agree() -> None:
    explicit = BackboneSpec.explicit(
        img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2
    )
    vit = build_vit(explicit)
    assert vit.embed_dim == 32 and len(vit.blocks) == 3 and vit.num_classes == 0
    assert vit.patch_embed.num_patches == 16


def test_build_vit__unknown_name_is_clear() -> None:
    with pytest.raises(GraftError, match="Unknown timm model 'vit_tinny'"):
        build_vit("vit_tinny")


def test_build_vit__non_vit_is_rejected() -> None:
    with pytest.raises(GraftError, match="VisionTransformer"):
        build_vit({"name": "resnet18"})


def test_wrap_vit__sincos_pos_embed_is_frozen(tiny_backbone: dict) -> None:
    encoder = wrap_vit(build_vit(tiny_backbone))
    assert not encoder.vit.pos_embed.requires_grad
    skipped = wrap_vit(build_vit(tiny_backbone), init=False)
    assert skipped.vit.pos_embed.requires_grad  # timm's own, untouched


def test_backbone_spec__coerce_forms() -> None:
    a = BackboneSpec.coerce({"name": "vit_tiny_patch16_224", "img_size": 32})
    b = BackboneSpec.coerce(
        {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}}
    )
    assert a == b == BackboneSpec("vit_tiny_patch16_224", {"img_size": 32})
    assert BackboneSpec.coerce("vit_small_patch16_224").name == "vit_small_patch16_224"
    assert BackboneSpec.coerce(a.to_dict()) == a
