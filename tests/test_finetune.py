"""Fine-tuning protocols: layer-wise LR decay, partial fine-tuning, end to end."""

from __future__ import annotations

import pytest
import torch
from graft_testing import TINY_BACKBONE
from torch.utils.data import DataLoader, TensorDataset

from lightly_graft.errors import GraftError
from lightly_graft.eval.finetune import FinetuneClassifier, FinetuneSettings, finetune
from lightly_graft.modules.backbone import build_vit


def _vit():
    torch.manual_seed(0)
    return build_vit(dict(TINY_BACKBONE))  # depth 3, width 32, 32 px


def _easy_images(num: int, seed: int) -> DataLoader:
    """Two classes: dark or bright images (learnable in a few steps)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % 2
    images = 0.3 * torch.randn(num, 3, 32, 32, generator=generator)
    images += (2 * labels.float() - 1).view(-1, 1, 1, 1)
    return DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=False)


def test_finetune__layer_decay_scales_each_layer():
    model = FinetuneClassifier(
        _vit(), 4, FinetuneSettings(base_lr=1e-3, layer_decay=0.6), 256
    )
    groups = model.optimizer_spec.param_groups(model, model.backbone, batch_size=256)
    lrs = {g["name"]: g["lr"] for g in groups}
    # Layers: embeddings 0, blocks 1..3, top (final norm, head) 4 = depth + 1.
    for layer in range(4):
        expected = 1e-3 * 0.6 ** (4 - layer)
        assert lrs[f"layer{layer}"] == pytest.approx(expected)
    assert lrs["layer4"] == pytest.approx(1e-3)  # head at the full LR
    head_group = next(
        g for g in groups if any(p is model.head.weight for p in g["params"])
    )
    assert head_group["name"] == "layer4"


def test_partial__frozen_blocks_stay_unchanged():
    model = FinetuneClassifier(_vit(), 2, FinetuneSettings(frozen_blocks=2), 16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}

    def below_block_2(name: str) -> bool:
        rel = name.removeprefix("backbone.").removeprefix("vit.")
        embeddings = ("cls_token", "pos_embed", "patch_embed", "mask_token")
        return (
            rel.startswith(("blocks.0.", "blocks.1."))
            or rel.split(".")[0] in embeddings
        )

    assert frozen == {n for n in before if below_block_2(n)}
    trainer_kwargs = {"limit_train_batches": 2, "enable_progress_bar": False}
    settings = FinetuneSettings(epochs=1, frozen_blocks=2, base_lr=0.1, warmup_epochs=0)
    result = finetune(
        model.backbone.vit,
        _easy_images(32, 0),
        _easy_images(16, 1),
        2,
        settings,
        accelerator="cpu",
        trainer_kwargs=trainer_kwargs,
    )
    assert result["frozen_blocks"] == 2 and result["frozen_parameters"] > 0
    vit = model.backbone.vit  # trained in place by finetune
    for name, param in vit.named_parameters():
        moved = not torch.equal(param, before[f"backbone.vit.{name}"])
        if name.startswith(("blocks.0.", "blocks.1.", "patch_embed")):
            assert not moved, name
        if name.startswith("blocks.2.attn.qkv.weight"):
            assert moved, name


@pytest.mark.slow
def test_finetune__learns_an_easy_task():
    settings = FinetuneSettings(epochs=3, base_lr=0.05, warmup_epochs=0)
    result = finetune(
        _vit(),
        _easy_images(64, 0),
        _easy_images(32, 1),
        2,
        settings,
        accelerator="cpu",
        trainer_kwargs={"enable_progress_bar": False},
    )
    assert result["top1"] >= 0.9
    assert result["layer_decay"] == 0.6 and result["frozen_parameters"] == 0


def test_finetune__rejects_too_many_frozen_blocks():
    with pytest.raises(GraftError, match="cannot freeze 4 blocks of a ViT with 3"):
        FinetuneClassifier(_vit(), 2, FinetuneSettings(frozen_blocks=4), 16)
