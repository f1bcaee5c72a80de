from __future__ import annotations

import pytest
import torch
from references import warmup_cosine_scale
from torch.testing import assert_close

from lightly_graft.functional.schedules import scale_lr
from lightly_graft.modules.backbone import build_vit, wrap_vit
from lightly_graft.training.optimizer import GraftedStageOptimizer, is_no_decay

STAGE_LRS = (1.5e-5, 1.5e-5, 1.5e-4)


def _model(tiny_backbone: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    encoder = wrap_vit(build_vit(tiny_backbone))
    model = torch.nn.ModuleDict({"backbone": encoder, "head": torch.nn.Linear(32, 8)})
    return model, encoder


def test_param_groups__partition_trainable_parameters(tiny_backbone: dict) -> None:
    model, encoder = _model(tiny_backbone)
    spec = GraftedStageOptimizer(stage_lrs=STAGE_LRS, num_stages=3)
    groups = spec.param_groups(model, encoder, batch_size=256)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)
    assert len(grouped) == len(set(grouped))
    names = [g["name"] for g in groups]
    assert names == [
        "stage0",
        "stage0_no_decay",
        "stage1",
        "stage1_no_decay",
        "stage2",
        "stage2_no_decay",
        "head",
        "head_no_decay",
    ]
    for group in groups:
        assert (group["weight_decay"] == 0.0) == group["name"].endswith("_no_decay")


def test_param_groups__embeddings_take_stage0_lr_and_norm_takes_head(
    tiny_backbone: dict,
) -> None:
    model, encoder = _model(tiny_backbone)
    spec = GraftedStageOptimizer(stage_lrs=STAGE_LRS, num_stages=3, head_lr=1e-3)
    groups = {g["name"]: g for g in spec.param_groups(model, encoder, batch_size=512)}
    ids = lambda name: {id(p) for p in groups[name]["params"]}  # noqa: E731
    assert id(encoder.vit.patch_embed.proj.weight) in ids("stage0")
    assert id(encoder.vit.cls_token) in ids("stage0_no_decay")
    assert id(encoder.vit.norm.weight) in ids("head_no_decay")
    assert id(model["head"].weight) in ids("head")
    assert groups["stage0"]["lr"] == pytest.approx(scale_lr(1.5e-5, 512))
    assert groups["stage2"]["lr"] == pytest.approx(scale_lr(1.5e-4, 512))
    assert groups["head"]["lr"] == pytest.approx(scale_lr(1e-3, 512))


def test_is_no_decay__tokens_biases_norms() -> None:
    assert is_no_decay("vit.cls_token", torch.zeros(1, 1, 8))
    assert is_no_decay("vit.pos_embed", torch.zeros(1, 5, 8))
    assert is_no_decay("vit.blocks.0.attn.qkv.bias", torch.zeros(24))
    assert is_no_decay("vit.blocks.0.norm1.weight", torch.zeros(8))
    assert not is_no_decay("vit.blocks.0.attn.qkv.weight", torch.zeros(24, 8))


def _run_steps(spec, tiny_backbone, steps=12, total=12, steps_per_epoch=4.0):
    model, encoder = _model(tiny_backbone)
    optimizer, scheduler = spec.build(
        model,
        encoder,
        batch_size=128,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
    )
    lrs = []
    for _ in range(steps):
        lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.zero_grad()
        model["head"](model["backbone"](torch.randn(2, 3, 32, 32))).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, lrs


def test_schedule__each_group_follows_its_own_base(tiny_backbone: dict) -> None:
    spec = GraftedStageOptimizer(stage_lrs=STAGE_LRS, num_stages=3, warmup_epochs=1.0)
    _, optimizer, lrs = _run_steps(spec, tiny_backbone)
    warmup = 4
    for step, values in enumerate(lrs):
        factor = warmup_cosine_scale(step, 12, warmup)
        for group in optimizer.param_groups:
            expected = scale_lr(group["base_lr"], 128) * factor
            assert values[group["name"]] == pytest.approx(expected, rel=1e-9, abs=1e-15)
        if factor > 0:
            assert values["stage2"] / values["stage0"] == pytest.approx(10.0)


def test_frozen_stages__excluded_and_unchanged(tiny_backbone: dict) -> None:
    spec = GraftedStageOptimizer(
        stage_lrs=STAGE_LRS, num_stages=3, frozen_stages=(0,), warmup_epochs=0
    )
    model, encoder = _model(tiny_backbone)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer, _ = spec.build(
        model, encoder, batch_size=64, total_steps=5, steps_per_epoch=5
    )
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for _ in range(3):
        optimizer.zero_grad()
        model["head"](model["backbone"](torch.randn(2, 3, 32, 32))).sum().backward()
        optimizer.step()
    frozen = [
        "backbone.vit.patch_embed.proj.weight",
        "backbone.vit.cls_token",
        "backbone.vit.blocks.0.attn.qkv.weight",
    ]
    params = dict(model.named_parameters())
    for name in frozen:
        assert not params[name].requires_grad
        assert id(params[name]) not in in_optimizer
        assert_close(params[name], before[name], rtol=0, atol=0)
    assert not torch.equal(
        params["backbone.vit.blocks.1.attn.qkv.weight"],
        before["backbone.vit.blocks.1.attn.qkv.weight"],
    )
    assert {g["name"] for g in optimizer.param_groups}.isdisjoint(
        {"stage0", "stage0_no_decay"}
    )


def test_layer_decay__lr_per_block(tiny_backbone: dict) -> None:
    model, encoder = _model(tiny_backbone)
    spec = GraftedStageOptimizer(base_lr=1e-3, layer_decay=0.6, num_stages=1)
    groups = {g["name"]: g for g in spec.param_groups(model, encoder, batch_size=256)}
    depth = 3
    for layer in range(depth + 2):
        assert groups[f"layer{layer}_no_decay"]["lr"] == pytest.approx(
            1e-3 * 0.6 ** (depth + 1 - layer)
        )
    assert id(model["head"].weight) in {
        id(p) for p in groups[f"layer{depth + 1}"]["params"]
    }


def test_partial_finetune__frozen_blocks(tiny_backbone: dict) -> None:
    model, encoder = _model(tiny_backbone)
    spec = GraftedStageOptimizer(
        base_lr=1e-3, layer_decay=0.6, num_stages=1, frozen_blocks=2
    )
    spec.param_groups(model, encoder, batch_size=256)
    assert not encoder.vit.blocks[1].attn.qkv.weight.requires_grad
    assert not encoder.vit.patch_embed.proj.weight.requires_grad
    assert encoder.vit.blocks[2].attn.qkv.weight.requires_grad


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stage_lrs": (1e-4, 1e-4), "num_stages": 3}, "one base LR per stage"),
        ({"frozen_stages": (3,), "num_stages": 3}, "out of range"),
        ({"name": "adam"}, "must be one of"),
        ({"layer_decay": 1.5}, "layer_decay"),
    ],
)
def test_grafted_stage_optimizer__invalid_spec(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GraftedStageOptimizer(**kwargs)


def test_build__indivisible_depth_is_clear(tiny_backbone: dict) -> None:
    model, encoder = _model(tiny_backbone)
    with pytest.raises(ValueError, match="depth 3 cannot be split into 2"):
        GraftedStageOptimizer(num_stages=2).param_groups(model, encoder, batch_size=8)
