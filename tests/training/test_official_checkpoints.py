"""The checkpoints of the official MAE and MoCo v3 code graft; no pickle runs code.

The files are built key by key as the official code writes them:

- facebookresearch/mae ``util/misc.py:save_model`` (``checkpoint-N.pth``),
  https://github.com/facebookresearch/mae/blob/efb2a8062c206524e35e47d04501ed4f544c0ae8/util/misc.py#L295-L309
  ``{'model': model_without_ddp.state_dict(), 'optimizer': optimizer.state_dict(),
  'epoch': epoch, 'scaler': loss_scaler.state_dict(), 'args': args}``, the model
  being ``models_mae.py``'s ``MaskedAutoencoderViT`` (encoder + decoder),
  https://github.com/facebookresearch/mae/blob/efb2a8062c206524e35e47d04501ed4f544c0ae8/models_mae.py#L26-L61
- facebookresearch/moco-v3 ``main_moco.py`` (``checkpoint_%04d.pth.tar``),
  https://github.com/facebookresearch/moco-v3/blob/c349e6e24f40d3fedb22d973f92defa4cedf37a7/main_moco.py#L310-L316
  ``{'epoch', 'arch', 'state_dict': model.state_dict(), 'optimizer', 'scaler'}``
  of the DistributedDataParallel-wrapped ``MoCo_ViT``,
  https://github.com/facebookresearch/moco-v3/blob/c349e6e24f40d3fedb22d973f92defa4cedf37a7/moco/builder.py#L24-L54
  (``base_encoder.head`` = 3-layer projector, ``predictor`` = 2-layer MLP).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from graft_testing import TINY_BACKBONE, tiny_method
from torch import Tensor
from torch.testing import assert_close

from lightly_graft import Grafting
from lightly_graft.errors import CheckpointError, UnsafeCheckpointError
from lightly_graft.training.checkpoints import (
    FORMATS,
    load_backbone,
    load_encoder_state,
)

DIM = TINY_BACKBONE["embed_dim"]
DEPTH = TINY_BACKBONE["depth"]
PATCH = TINY_BACKBONE["patch_size"]
NUM_PATCHES = (TINY_BACKBONE["img_size"] // PATCH) ** 2
MLP_DIM, OUT_DIM = 64, 16  # moco-v3's --moco-mlp-dim / --moco-dim, tiny
DECODER_DIM = 16


def _block(prefix: str, dim: int, g: torch.Generator) -> dict[str, Tensor]:
    """timm ``Block`` (qkv_bias=True, mlp_ratio=4), as both repositories use it."""
    shapes = {
        "norm1.weight": (dim,),
        "norm1.bias": (dim,),
        "attn.qkv.weight": (3 * dim, dim),
        "attn.qkv.bias": (3 * dim,),
        "attn.proj.weight": (dim, dim),
        "attn.proj.bias": (dim,),
        "norm2.weight": (dim,),
        "norm2.bias": (dim,),
        "mlp.fc1.weight": (4 * dim, dim),
        "mlp.fc1.bias": (4 * dim,),
        "mlp.fc2.weight": (dim, 4 * dim),
        "mlp.fc2.bias": (dim,),
    }
    return {prefix + k: torch.randn(s, generator=g) for k, s in shapes.items()}


def _vit_encoder(g: torch.Generator, prefix: str = "") -> dict[str, Tensor]:
    """A ViT encoder in timm names: parameters of the module itself first, then
    its submodules in registration order (how ``state_dict`` walks it)."""
    state = {
        f"{prefix}cls_token": torch.randn(1, 1, DIM, generator=g),
        f"{prefix}pos_embed": torch.randn(1, NUM_PATCHES + 1, DIM, generator=g),
        f"{prefix}patch_embed.proj.weight": torch.randn(
            DIM, 3, PATCH, PATCH, generator=g
        ),
        f"{prefix}patch_embed.proj.bias": torch.randn(DIM, generator=g),
    }
    for i in range(DEPTH):
        state.update(_block(f"{prefix}blocks.{i}.", DIM, g))
    state[f"{prefix}norm.weight"] = torch.randn(DIM, generator=g)
    state[f"{prefix}norm.bias"] = torch.randn(DIM, generator=g)
    return state


def _mae_model(g: torch.Generator) -> dict[str, Tensor]:
    """``MaskedAutoencoderViT.state_dict()``: cls_token, pos_embed, mask_token and
    decoder_pos_embed are its own parameters; then patch_embed, blocks, norm,
    decoder_embed, decoder_blocks, decoder_norm, decoder_pred."""
    encoder = _vit_encoder(g)
    state = {
        "cls_token": encoder.pop("cls_token"),
        "pos_embed": encoder.pop("pos_embed"),
        "mask_token": torch.randn(1, 1, DECODER_DIM, generator=g),
        "decoder_pos_embed": torch.randn(1, NUM_PATCHES + 1, DECODER_DIM, generator=g),
        **encoder,
        "decoder_embed.weight": torch.randn(DECODER_DIM, DIM, generator=g),
        "decoder_embed.bias": torch.randn(DECODER_DIM, generator=g),
    }
    state.update(_block("decoder_blocks.0.", DECODER_DIM, g))
    state["decoder_norm.weight"] = torch.randn(DECODER_DIM, generator=g)
    state["decoder_norm.bias"] = torch.randn(DECODER_DIM, generator=g)
    state["decoder_pred.weight"] = torch.randn(PATCH**2 * 3, DECODER_DIM, generator=g)
    state["decoder_pred.bias"] = torch.randn(PATCH**2 * 3, generator=g)
    return state


def _adamw_state(state: dict[str, Tensor], **kwargs: object) -> dict[str, object]:
    """``optimizer.state_dict()`` of a real AdamW after one step (over the
    trainable tensors: no BatchNorm statistics, no fixed sin-cos tables)."""
    params = [
        torch.nn.Parameter(v.clone())
        for k, v in state.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        and not k.endswith("pos_embed")
    ]
    optimizer = torch.optim.AdamW(params, lr=1e-3, **kwargs)  # type: ignore[arg-type]
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    return optimizer.state_dict()


# torch.cuda.amp.GradScaler().state_dict() on a GPU (NativeScalerWithGradNormCount
# in MAE, GradScaler in moco-v3).
SCALER = {
    "scale": 65536.0,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "_growth_tracker": 0,
}


def _mae_args() -> argparse.Namespace:
    """main_pretrain.py's defaults, after init_distributed_mode and the LR scaling."""
    return argparse.Namespace(
        batch_size=64,
        epochs=400,
        accum_iter=1,
        model="mae_vit_large_patch16",
        input_size=224,
        mask_ratio=0.75,
        norm_pix_loss=True,
        weight_decay=0.05,
        lr=0.004,
        blr=1e-3,
        min_lr=0.0,
        warmup_epochs=40,
        data_path="/datasets01/imagenet_full_size/061417/",
        output_dir="./output_dir",
        log_dir="./output_dir",
        device="cuda",
        seed=0,
        resume="",
        start_epoch=0,
        num_workers=10,
        pin_mem=True,
        world_size=8,
        local_rank=-1,
        dist_on_itp=False,
        dist_url="env://",
        rank=0,
        gpu=0,
        distributed=True,
        dist_backend="nccl",
    )


def _mlp(prefix: str, layers: int, dims: list[int], g: torch.Generator) -> dict:
    """``MoCo._build_mlp``: Linear(bias=False), BatchNorm1d, ReLU per hidden layer;
    the last Linear followed by BatchNorm1d(affine=False)."""
    state: dict[str, Tensor] = {}
    index = 0
    for layer in range(layers):
        state[f"{prefix}{index}.weight"] = torch.randn(
            dims[layer + 1], dims[layer], generator=g
        )
        bn = f"{prefix}{index + 1}."
        width = dims[layer + 1]
        if layer < layers - 1:
            state[bn + "weight"] = torch.ones(width)
            state[bn + "bias"] = torch.zeros(width)
        state[bn + "running_mean"] = torch.zeros(width)
        state[bn + "running_var"] = torch.ones(width)
        state[bn + "num_batches_tracked"] = torch.tensor(7)
        index += 3
    return state


def _moco_v3_state(g: torch.Generator) -> dict[str, Tensor]:
    """``DistributedDataParallel(MoCo_ViT).state_dict()``."""
    state: dict[str, Tensor] = {}
    for encoder in ("base_encoder", "momentum_encoder"):
        prefix = f"module.{encoder}."
        state.update(_vit_encoder(g, prefix))
        state.update(_mlp(prefix + "head.", 3, [DIM, MLP_DIM, MLP_DIM, OUT_DIM], g))
    state.update(_mlp("module.predictor.", 2, [OUT_DIM, MLP_DIM, OUT_DIM], g))
    return state


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("official")
    g = torch.Generator().manual_seed(0)
    mae_model = _mae_model(g)
    mae_path = tmp / "checkpoint-399.pth"
    torch.save(
        {
            "model": mae_model,
            "optimizer": _adamw_state(mae_model, betas=(0.9, 0.95)),
            "epoch": 399,
            "scaler": SCALER,
            "args": _mae_args(),
        },
        mae_path,
    )
    moco_state = _moco_v3_state(g)
    moco_path = tmp / "checkpoint_0299.pth.tar"
    torch.save(
        {
            "epoch": 300,
            "arch": "vit_base",
            "state_dict": moco_state,
            "optimizer": _adamw_state(moco_state, weight_decay=0.1),
            "scaler": SCALER,
        },
        moco_path,
    )
    return {
        "mae": mae_path,
        "mae_model": mae_model,
        "moco_v3": moco_path,
        "moco_state": moco_state,
    }


def test_mae_training_checkpoint__grafts_into_moco(official: dict) -> None:
    moco = tiny_method("grafted_moco")
    report = Grafting(official["mae"], format="mae", num_blocks=2).graft(moco)
    assert report.is_complete
    source = official["mae_model"]
    for encoder in (moco.backbone, moco.backbone_momentum):
        state = encoder.vit.state_dict()
        for key in report.loaded:
            assert_close(state[key], source[key], rtol=0, atol=0)
    assert {"cls_token", "pos_embed", "blocks.1.mlp.fc2.bias"} <= set(report.loaded)
    decoder = {k for k in source if k.startswith(("decoder", "mask_token"))}
    assert decoder <= set(report.skipped)


def test_mae_training_checkpoint__loads_as_backbone(official: dict) -> None:
    vit, _ = load_backbone(official["mae"], "mae", spec=dict(TINY_BACKBONE))
    source = official["mae_model"]
    for key, value in vit.state_dict().items():
        assert_close(value, source[key], rtol=0, atol=0)


def test_moco_v3_checkpoint__grafts_base_encoder_into_mae(official: dict) -> None:
    # CL->MIM: the lower blocks of the MoCo v3 release, the rest trained by MAE.
    mae = tiny_method("mae")
    report = Grafting(official["moco_v3"], format="moco_v3", num_blocks=2).graft(mae)
    assert report.is_complete
    source = official["moco_state"]
    state = mae.backbone.vit.state_dict()
    for key in report.loaded:
        assert_close(state[key], source["module.base_encoder." + key], rtol=0, atol=0)
        assert not torch.equal(state[key], source["module.momentum_encoder." + key])
    assert {"pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight"} <= set(
        report.loaded
    )
    assert not torch.equal(
        state["blocks.2.attn.qkv.weight"],
        source["module.base_encoder.blocks.2.attn.qkv.weight"],
    )
    skipped = set(report.skipped)
    assert {k for k in source if not k.startswith("module.base_encoder.")} <= skipped
    assert "module.base_encoder.head.0.weight" in skipped  # the projector


def test_moco_v3_checkpoint__encoder_state_is_convert_to_deit(official: dict) -> None:
    # moco-v3's convert_to_deit.py: strip 'module.base_encoder.', drop 'head.*'.
    state, spec, _ = load_encoder_state(official["moco_v3"], "moco_v3")
    full = official["moco_state"]
    expected = {
        k[len("module.base_encoder.") :]: v
        for k, v in full.items()
        if k.startswith("module.base_encoder")
        and not k.startswith("module.base_encoder.head")
    }
    assert spec is None and state.keys() == expected.keys()
    for key, value in expected.items():
        assert_close(state[key], value, rtol=0, atol=0)


def test_moco_v3__other_layouts_are_named_in_the_error(
    official: dict, tmp_path: Path
) -> None:
    with pytest.raises(
        CheckpointError, match="should hold 'state_dict'.*looks like a 'mae'"
    ):
        load_encoder_state(official["mae"], "moco_v3")
    with pytest.raises(CheckpointError, match="looks like a 'moco_v3'"):
        load_encoder_state(official["moco_v3"], "mae")
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"backbone.vit.cls_token": torch.zeros(1)}}, lightning)
    with pytest.raises(
        CheckpointError, match=r"no 'module.base_encoder.\*'.*\['backbone.vit'\]"
    ):
        load_encoder_state(lightning, "moco_v3")


class RunsCode:
    """A pickle whose ``__reduce__`` writes a marker file when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _layout_with_payload(format: str, payload: RunsCode) -> dict:
    """A file of ``format`` with the payload where such a file holds Python objects."""
    weights = {"cls_token": torch.zeros(1, 1, DIM)}
    return {
        "lightly_graft": {
            "format": "lightly_graft",
            "version": 1,
            "backbone": {"name": payload, "kwargs": {}},
            "state_dict": weights,
        },
        "lightning": {
            "pytorch-lightning_version": "2.6.6",
            "state_dict": {"backbone.vit.cls_token": weights["cls_token"]},
            "hyper_parameters": {"backbone": payload},
        },
        "mae": {"model": weights, "epoch": 0, "args": payload},
        "moco_v3": {
            "epoch": 1,
            "arch": payload,
            "state_dict": {"module.base_encoder.cls_token": weights["cls_token"]},
        },
        "timm": {"cls_token": weights["cls_token"], "pos_embed": payload},
    }[format]


@pytest.mark.parametrize("format", FORMATS)
def test_malicious_pickle__runs_no_code(format: str, tmp_path: Path) -> None:
    # The payload does run under a plain pickle load (so the test can fail) ...
    proof = tmp_path / "proof"
    torch.save(_layout_with_payload(format, RunsCode(proof)), tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert proof.exists()
    # ... and not under ours, which names the refused global.
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save(_layout_with_payload(format, RunsCode(marker)), path)
    with pytest.raises(
        UnsafeCheckpointError, match=r"pickles '(builtins\.)?exec'.*could run code"
    ):
        load_encoder_state(path, format)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        Grafting(path, format=format).graft(tiny_method("grafted_moco"))
    assert not marker.exists()


def test_unsafe_checkpoint_error__is_a_checkpoint_error() -> None:
    assert issubclass(UnsafeCheckpointError, CheckpointError)


def test_truncated_file__is_not_called_unsafe(official: dict, tmp_path: Path) -> None:
    data = Path(official["mae"]).read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="complete .pt") as info:
        load_encoder_state(path, "mae")
    assert not isinstance(info.value, UnsafeCheckpointError)
