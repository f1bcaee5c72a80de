from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from graft_testing import RandomViews, fit_tiny, tiny_method, tiny_trainer
from torch.testing import assert_close

from lightly_graft import Grafting
from lightly_graft.errors import CheckpointError
from lightly_graft.modules.backbone import BackboneSpec
from lightly_graft.training.checkpoints import export_timm, load_backbone, save_backbone

FORMATS = ("lightly_graft", "lightning", "mae", "timm")


@pytest.fixture(scope="module")
def mim_checkpoints(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Path], dict[str, torch.Tensor]]:
    """A tiny MAE trained two steps, saved in each of the four formats."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("mim")
    mae = tiny_method("mae")
    trainer = fit_tiny(mae, num_views=1, max_steps=2)
    vit = mae.backbone.vit
    spec = BackboneSpec.coerce(mae.hparams["backbone"])
    paths = {f: tmp / f / "ckpt.pt" for f in FORMATS}
    paths["lightning"] = tmp / "lightning" / "mae.ckpt"
    paths["lightning"].parent.mkdir()
    trainer.save_checkpoint(paths["lightning"])
    save_backbone(paths["lightly_graft"], vit, spec)
    export_timm(paths["timm"], vit, spec)
    paths["mae"].parent.mkdir()
    # facebookresearch/mae full checkpoints hold the decoder too: it must be skipped.
    model = {
        **vit.state_dict(),
        "decoder_embed.weight": torch.zeros(16, 32),
        "mask_token": torch.zeros(1, 1, 16),
    }
    torch.save({"model": model, "epoch": 1}, paths["mae"])
    return paths, {k: v.clone() for k, v in vit.state_dict().items()}


@pytest.mark.parametrize("format", FORMATS)
def test_grafting__loads_every_format(mim_checkpoints, format: str) -> None:
    paths, source = mim_checkpoints
    moco = tiny_method("grafted_moco")
    callback = Grafting(paths[format], format=format, num_blocks=2)
    report = callback.graft(moco)
    for encoder in (moco.backbone, moco.backbone_momentum):
        state = encoder.vit.state_dict()
        for key in (
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "blocks.0.attn.qkv.weight",
            "blocks.1.mlp.fc2.bias",
        ):
            assert_close(state[key], source[key], rtol=0, atol=0)
        assert not torch.equal(
            state["blocks.2.attn.qkv.weight"], source["blocks.2.attn.qkv.weight"]
        )
        assert not torch.equal(state["norm.weight"], source["norm.weight"])
    assert report.is_complete
    assert set(report.loaded) == {
        k
        for k in source
        if k.startswith(
            ("cls_token", "pos_embed", "patch_embed", "blocks.0.", "blocks.1.")
        )
    }
    assert {
        k for k in report.skipped if not k.startswith(("decoder", "mask_token"))
    } == {k for k in source if k.startswith(("blocks.2.", "norm."))}
    if format == "mae":
        assert {"decoder_embed.weight", "mask_token"} <= set(report.skipped)


def test_grafting__all_blocks_includes_norm(mim_checkpoints) -> None:
    paths, source = mim_checkpoints
    moco = tiny_method("grafted_moco")
    report = Grafting(paths["timm"], format="timm").graft(moco)
    assert set(report.loaded) == set(source)
    assert_close(moco.backbone.vit.state_dict()["norm.weight"], source["norm.weight"])


def test_grafting__pos_embed_is_loaded_not_rebuilt(
    mim_checkpoints, tmp_path: Path
) -> None:
    paths, source = mim_checkpoints
    state = dict(source)
    # A position table that no sin-cos rebuild would produce (transposed grid).
    grid = (
        state["pos_embed"][:, 1:]
        .reshape(1, 4, 4, -1)
        .transpose(1, 2)
        .reshape(1, 16, -1)
    )
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], grid], dim=1)
    torch.save(state, tmp_path / "transposed.pt")
    moco = tiny_method("grafted_moco")
    Grafting(tmp_path / "transposed.pt", format="timm", num_blocks=1).graft(moco)
    assert_close(moco.backbone.vit.pos_embed, state["pos_embed"], rtol=0, atol=0)


def test_grafting__shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # Trained at 48 px: 36 patches + CLS instead of 16 + CLS.
    big = tiny_method(
        "mae",
        backbone={
            "name": "vit_tiny_patch16_224",
            "img_size": 48,
            "patch_size": 8,
            "embed_dim": 32,
            "depth": 3,
            "num_heads": 2,
        },
    )
    save_backbone(
        tmp_path / "big.pt",
        big.backbone.vit,
        BackboneSpec.coerce(big.hparams["backbone"]),
    )
    moco = tiny_method("grafted_moco")
    before = moco.backbone.vit.blocks[0].attn.qkv.weight.detach().clone()
    with pytest.raises(
        CheckpointError,
        match=r"1 shape mismatch.*pos_embed: checkpoint \(1, 37, 32\) vs model \(1, 17, 32\)",
    ):
        Grafting(tmp_path / "big.pt", format="lightly_graft", num_blocks=2).graft(moco)
    # Nothing was loaded.
    assert_close(moco.backbone.vit.blocks[0].attn.qkv.weight, before, rtol=0, atol=0)


def test_grafting__partial_refused_unless_allowed(
    mim_checkpoints, tmp_path: Path
) -> None:
    paths, source = mim_checkpoints
    partial = {k: v for k, v in source.items() if not k.startswith("blocks.1.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing key"):
        Grafting(tmp_path / "partial.pt", format="timm", num_blocks=2).graft(
            tiny_method("grafted_moco")
        )
    report = Grafting(
        tmp_path / "partial.pt", format="timm", num_blocks=2, allow_partial=True
    ).graft(tiny_method("grafted_moco"))
    assert report.missing and all(k.startswith("blocks.1.") for k in report.missing)


@pytest.mark.parametrize(
    "path, format, match",
    [
        ("missing.pt", "timm", "does not exist"),
        ("garbage.pt", "timm", "cannot be read"),
        ("lightning", "mae", "is not a 'mae' checkpoint.*looks like a 'lightning'"),
        ("timm", "lightly_graft", "is not a 'lightly_graft' checkpoint"),
        ("timm", "tim", "Unknown checkpoint format 'tim'.*did you mean 'timm'"),
    ],
)
def test_grafting__bad_checkpoints_are_clear(
    mim_checkpoints, tmp_path: Path, path: str, format: str, match: str
) -> None:
    paths, _ = mim_checkpoints
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    target = paths.get(path, tmp_path / path)
    with pytest.raises(CheckpointError, match=match):
        Grafting(target, format=format).graft(tiny_method("grafted_moco"))


def test_anchor__zero_at_start_and_gradient(mim_checkpoints) -> None:
    paths, _ = mim_checkpoints
    moco = tiny_method("grafted_moco")
    weight = 0.3
    Grafting(paths["timm"], format="timm", num_blocks=2, anchor_weight=weight).graft(
        moco
    )
    anchor = moco.regularizers["graft_anchor"]
    assert anchor(moco).item() == 0.0
    with torch.no_grad():
        for name in anchor.names:
            moco.get_parameter(name).add_(torch.randn_like(moco.get_parameter(name)))
    moco.zero_grad()
    anchor(moco).backward()
    for name, ref in zip(anchor.names, anchor.references(), strict=False):
        param = moco.get_parameter(name)
        assert_close(
            param.grad, 2 * weight * (param.detach() - ref), rtol=1e-5, atol=1e-6
        )
    # Anchored: embeddings and blocks 0-1 of the online encoder only.
    assert all(
        n.startswith("backbone.vit.") and ".blocks.2." not in n for n in anchor.names
    )
    assert any(".blocks.1." in n for n in anchor.names)
    assert all(r.requires_grad is False for r in anchor.references())
    assert not any(n.startswith("regularizers") for n in moco.state_dict())


def test_anchor__references_are_not_broadcast_by_ddp(mim_checkpoints) -> None:
    # DDP broadcasts every buffer of the module from rank 0 on every forward.
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    paths, _ = mim_checkpoints
    moco = tiny_method("grafted_moco")
    Grafting(paths["timm"], format="timm", num_blocks=2, anchor_weight=0.1).graft(moco)
    anchor = moco.regularizers["graft_anchor"]
    assert len(anchor.references()) == len(anchor.names) > 0
    assert list(anchor.buffers()) == [] and list(anchor.parameters()) == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    try:
        ddp = DistributedDataParallel(moco)
        broadcast = set(ddp.named_module_buffers)
    finally:
        dist.destroy_process_group()
    assert any("running_mean" in name for name in broadcast)  # the heads' BN
    assert not any(name.startswith("regularizers") for name in broadcast)
    assert not any(
        ref is param for ref in anchor.references() for param in moco.parameters()
    )


def test_anchor__references_follow_device_and_dtype(mim_checkpoints) -> None:
    paths, source = mim_checkpoints
    moco = tiny_method("grafted_moco")
    Grafting(paths["timm"], format="timm", num_blocks=2, anchor_weight=0.1).graft(moco)
    moco.to(torch.float64)
    anchor = moco.regularizers["graft_anchor"]
    assert {r.dtype for r in anchor.references()} == {torch.float64}
    assert anchor(moco).item() == 0.0
    index = anchor.names.index("backbone.vit.blocks.0.attn.qkv.weight")
    assert_close(
        anchor.references()[index],
        source["blocks.0.attn.qkv.weight"].double(),
        rtol=0,
        atol=0,
    )


def test_anchor__resume_keeps_the_mim_references(
    mim_checkpoints, tmp_path: Path
) -> None:
    paths, source = mim_checkpoints
    optimizer = {"base_lr": 0.5, "num_stages": 3, "warmup_epochs": 0}

    def grafting() -> Grafting:
        return Grafting(paths["timm"], format="timm", num_blocks=2, anchor_weight=1.0)

    moco = tiny_method("grafted_moco", num_classes=0, optimizer=optimizer)
    trainer = fit_tiny(moco, max_steps=2, callbacks=[grafting()])
    checkpoint = tmp_path / "step2.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert not any(key.startswith("regularizers") for key in saved)
    trained = moco.backbone.vit.blocks[0].attn.qkv.weight.detach().clone()
    assert not torch.equal(trained, source["blocks.0.attn.qkv.weight"])

    seen: dict[str, torch.Tensor] = {}

    class Probe(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
            anchor = module.regularizers["graft_anchor"]
            index = anchor.names.index("backbone.vit.blocks.0.attn.qkv.weight")
            seen["reference"] = anchor.references()[index].clone()
            seen["weight"] = module.backbone.vit.blocks[0].attn.qkv.weight.clone()

    resumed = tiny_method("grafted_moco", num_classes=0, optimizer=optimizer)
    loader = torch.utils.data.DataLoader(RandomViews(2), batch_size=8)
    tiny_trainer(max_steps=3, callbacks=[grafting(), Probe()]).fit(
        resumed, train_dataloaders=loader, ckpt_path=checkpoint
    )
    assert_close(seen["weight"], trained, rtol=0, atol=0)  # restored, not re-grafted
    assert_close(seen["reference"], source["blocks.0.attn.qkv.weight"], rtol=0, atol=0)


def test_anchor__l1_gradient_is_sign(mim_checkpoints) -> None:
    paths, _ = mim_checkpoints
    moco = tiny_method("grafted_moco")
    Grafting(
        paths["timm"], format="timm", num_blocks=1, anchor_weight=0.5, anchor_p=1
    ).graft(moco)
    anchor = moco.regularizers["graft_anchor"]
    name = anchor.names[-1]
    with torch.no_grad():
        moco.get_parameter(name).add_(0.1)
    moco.zero_grad()
    anchor(moco).backward()
    assert_close(
        moco.get_parameter(name).grad, torch.full_like(moco.get_parameter(name), 0.5)
    )


def test_anchor__weight_zero_equals_no_anchor(mim_checkpoints) -> None:
    paths, _ = mim_checkpoints
    results = []
    for callbacks in (
        [Grafting(paths["timm"], format="timm", num_blocks=2, anchor_weight=0.0)],
        [Grafting(paths["timm"], format="timm", num_blocks=2)],
    ):
        torch.manual_seed(0)
        moco = tiny_method("grafted_moco", num_classes=0)
        fit_tiny(moco, max_steps=2, callbacks=callbacks)
        results.append({k: v.clone() for k, v in moco.state_dict().items()})
    for key in results[0]:
        assert_close(results[0][key], results[1][key], rtol=0, atol=0)


def test_anchor__pulls_towards_mim_weights(mim_checkpoints) -> None:
    paths, source = mim_checkpoints
    distances = []
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        moco = tiny_method(
            "grafted_moco",
            num_classes=0,
            optimizer={"base_lr": 0.5, "num_stages": 3, "warmup_epochs": 0},
        )
        fit_tiny(
            moco,
            max_steps=3,
            callbacks=[
                Grafting(
                    paths["timm"], format="timm", num_blocks=2, anchor_weight=weight
                )
            ],
        )
        w = moco.backbone.vit.blocks[0].attn.qkv.weight.detach()
        distances.append((w - source["blocks.0.attn.qkv.weight"]).pow(2).sum().item())
    assert distances[1] < distances[0]


def test_grafting__freeze_epochs_keeps_blocks(mim_checkpoints) -> None:
    paths, source = mim_checkpoints
    moco = tiny_method(
        "grafted_moco",
        num_classes=0,
        optimizer={"base_lr": 0.1, "num_stages": 3, "warmup_epochs": 0},
    )
    fit_tiny(
        moco,
        max_steps=2,
        callbacks=[
            Grafting(paths["timm"], format="timm", num_blocks=2, freeze_epochs=5)
        ],
    )
    state = moco.backbone.vit.state_dict()
    for key in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "cls_token"):
        assert_close(state[key], source[key], rtol=0, atol=0)
    assert not torch.equal(
        state["blocks.2.attn.qkv.weight"], source["blocks.2.attn.qkv.weight"]
    )


@pytest.mark.parametrize("format", FORMATS)
def test_load_backbone__every_format(mim_checkpoints, format: str) -> None:
    paths, source = mim_checkpoints
    vit, spec = load_backbone(
        paths[format],
        format,
        spec=None
        if format != "mae"
        else BackboneSpec.coerce(
            {
                "name": "vit_tiny_patch16_224",
                "img_size": 32,
                "patch_size": 8,
                "embed_dim": 32,
                "depth": 3,
                "num_heads": 2,
            }
        ),
    )
    assert spec.kwargs["embed_dim"] == 32
    for key, value in vit.state_dict().items():
        assert_close(value, source[key], rtol=0, atol=0)


def test_load_backbone__unknown_architecture_is_clear(mim_checkpoints) -> None:
    paths, _ = mim_checkpoints
    with pytest.raises(CheckpointError, match="architecture of .* is unknown"):
        load_backbone(paths["mae"], "mae")


def test_grafting__logs_anchor_distance_per_stage(
    mim_checkpoints, tmp_path: Path
) -> None:
    import csv

    from pytorch_lightning.loggers import CSVLogger

    paths, _ = mim_checkpoints
    moco = tiny_method("grafted_moco", num_classes=0)
    logger = CSVLogger(tmp_path, name="run")
    callback = Grafting(
        paths["timm"], format="timm", anchor_weight=1e-3, log_every_n_steps=1
    )
    fit_tiny(
        moco, max_steps=2, callbacks=[callback], logger=logger, log_every_n_steps=1
    )
    with open(logger.log_dir + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for stage in range(3):
        values = [
            float(r[f"graft/anchor_distance_stage{stage}"])
            for r in rows
            if r.get(f"graft/anchor_distance_stage{stage}")
        ]
        assert values and values[-1] > 0  # the blocks moved away from the MIM weights
    assert any(r.get("train/graft_anchor") for r in rows)


def test_grafting_argument__a_methods_entry_alone_grafts(
    mim_checkpoints, tmp_path: Path
) -> None:
    # lightly's benchmark main.py: the model comes from METHODS[name]["model"](
    # batch_size_per_device=..., num_classes=...) and pretrain() builds the
    # Trainer's callbacks itself, without a Grafting.
    import functools

    from graft_testing import TINY_BACKBONE, TINY_METHOD_ARGS
    from pytorch_lightning.callbacks import EarlyStopping

    from lightly_graft.methods.grafted_moco import GraftedMoCo, transform
    from lightly_graft.training.checkpoints import load_encoder_state

    paths, source = mim_checkpoints
    grafting = Grafting(paths["timm"], format="timm", num_blocks=2, freeze_epochs=5)
    methods = {
        "grafted_moco": {
            "model": functools.partial(
                GraftedMoCo,
                backbone=dict(TINY_BACKBONE),
                optimizer={"base_lr": 0.1, "num_stages": 3, "warmup_epochs": 0},
                grafting=grafting,
                **TINY_METHOD_ARGS["grafted_moco"],
            ),
            "transform": transform,
        }
    }
    model = methods["grafted_moco"]["model"](batch_size_per_device=8, num_classes=4)
    assert model.configure_callbacks() == [grafting]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EarlyStopping(monitor="train_loss", patience=10**12)],
    )
    loader = torch.utils.data.DataLoader(RandomViews(2), batch_size=8)
    trainer.fit(model, train_dataloaders=loader)
    assert grafting in trainer.callbacks
    assert grafting.report is not None and grafting.report.is_complete
    online = model.backbone.vit.state_dict()
    ema = model.backbone_momentum.vit.state_dict()  # EMA of equal tensors: rounding
    for key in ("cls_token", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.bias"):
        assert_close(online[key], source[key], rtol=0, atol=0)
        assert_close(ema[key], source[key])
    assert not torch.equal(
        model.backbone.vit.state_dict()["blocks.2.attn.qkv.weight"],
        source["blocks.2.attn.qkv.weight"],
    )
    # The callback is not a hyperparameter: the checkpoint stays weights-only.
    assert "grafting" not in model.hparams
    path = tmp_path / "moco.ckpt"
    trainer.save_checkpoint(path)
    state, _, _ = load_encoder_state(path, "lightning")
    assert_close(state["blocks.0.attn.qkv.weight"], source["blocks.0.attn.qkv.weight"])
    restored = GraftedMoCo.load_from_checkpoint(path, weights_only=True)
    assert restored.grafting is None


def test_grafting_argument__rejects_other_objects(mim_checkpoints) -> None:
    paths, _ = mim_checkpoints
    with pytest.raises(TypeError, match="Grafting callback or None, got PosixPath"):
        tiny_method("mae", grafting=paths["timm"])
