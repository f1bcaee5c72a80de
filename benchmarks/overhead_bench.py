"""Overhead of our training steps against reference implementations (issue 13.2).

Same ViT, heads, batch and precision on both sides of each pair, fixed random
images, paired rounds (benchmarks/step_harness.py):

- ``moco``: our full Lightning step, ``GraftedMoCo`` + the ``Grafting`` callback
  (all blocks grafted from a checkpoint, l2 anchor on, so its penalty and its
  distance logs run every step), CSV logging on, kNN monitor off; against a
  plain PyTorch MoCo v3 loop with the structure of facebookresearch/moco-v3
  ``main_moco.py`` / ``moco/builder.py`` (pinned below): per-iteration cosine LR
  and momentum, momentum update then keys, symmetric ``CE(q k^T / T) * 2T``,
  AdamW over all parameters, frozen patch embedding. It has no anchor and one
  parameter group: those costs count as our overhead.
- ``mae``: our ``MAE`` against lightly's benchmark MAE module, reproduced here
  from lightly-ai/lightly ``benchmarks/imagenet/vitb16/mae.py`` (pinned below;
  not in the installed wheel) with the ViT and decoder sizes as arguments. Both
  run under the same Lightning Trainer, both with an online linear classifier.

The kNN monitor's share of a run is measured on a real quickstart run by
``benchmarks/knn_share.py``.

References:
- https://github.com/facebookresearch/moco-v3/blob/main/main_moco.py
- https://github.com/facebookresearch/moco-v3/blob/main/moco/builder.py
- https://github.com/lightly-ai/lightly/blob/7e9c0cedf958e1198ab8b09ba7ddd0b30561a1c4/benchmarks/imagenet/vitb16/mae.py

Usage::

    python benchmarks/overhead_bench.py                   # quickstart size
    python benchmarks/overhead_bench.py --preset recipes192 --tag recipes192
    python benchmarks/overhead_bench.py --rounds 1 --steps 2 --warmup 1 --output /tmp/o

Writes ``benchmarks/results/overhead[_TAG].md``. Target: A / B <= 1.03.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from step_harness import (  # noqa: E402
    PRESETS,
    RESULTS,
    TABLE_HEAD,
    Pair,
    environment,
    fit_timed,
    loader,
    paired,
)

from lightly_graft.methods.grafted_moco import GraftedMoCo  # noqa: E402
from lightly_graft.methods.mae import MAE  # noqa: E402
from lightly_graft.training.grafting import Grafting  # noqa: E402

BASE_LR, TEMPERATURE, ANCHOR = 1.5e-4, 0.2, 1e-4


# -- our MoCo v3 step ---------------------------------------------------------
def ours_moco(preset: dict[str, Any], workdir: Path) -> Any:
    def run(steps: int, precision: str) -> list[float]:
        torch.manual_seed(0)
        module = GraftedMoCo(
            batch_size_per_device=preset["moco_batch"],
            num_classes=0,
            backbone=preset["backbone"],
            temperature=TEMPERATURE,
            **preset["heads"],
        )
        checkpoint = workdir / "mim.pt"
        if not checkpoint.exists():
            torch.save(module.backbone.vit.state_dict(), checkpoint)
        graft = Grafting(checkpoint, format="timm", anchor_weight=ANCHOR)
        data = loader(preset["moco_batch"], steps, _img_size(preset), 2)
        return fit_timed(module, data, steps, precision, workdir, [graft])

    return run


# -- plain MoCo v3 loop (facebookresearch/moco-v3, no Lightning) --------------
def _build_mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int):
    """moco/builder.py ``MoCo._build_mlp`` (last_bn=True)."""
    layers: list[nn.Module] = []
    for layer in range(num_layers):
        dim1 = input_dim if layer == 0 else mlp_dim
        dim2 = output_dim if layer == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(dim1, dim2, bias=False))
        if layer < num_layers - 1:
            layers.append(nn.BatchNorm1d(dim2))
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*layers)


class PlainMoCoV3(nn.Module):
    """moco/builder.py ``MoCo_ViT``: timm ViT with the projector as its head."""

    def __init__(self, backbone: dict[str, Any], dim: int, mlp_dim: int, T: float):
        super().__init__()
        self.T = T
        kwargs = {k: v for k, v in backbone.items() if k != "name"}
        self.base_encoder = timm.create_model(backbone["name"], num_classes=0, **kwargs)
        self.momentum_encoder = timm.create_model(backbone["name"], num_classes=0, **kwargs)  # fmt: skip
        hidden = self.base_encoder.embed_dim
        self.base_encoder.head = _build_mlp(3, hidden, mlp_dim, dim)
        self.momentum_encoder.head = _build_mlp(3, hidden, mlp_dim, dim)
        self.predictor = _build_mlp(2, dim, mlp_dim, dim)
        for encoder in (self.base_encoder, self.momentum_encoder):
            encoder.pos_embed.requires_grad = False  # fixed sin-cos table
            encoder.patch_embed.proj.weight.requires_grad = False  # stop_grad_conv1
            encoder.patch_embed.proj.bias.requires_grad = False
        for p_b, p_m in zip(
            self.base_encoder.parameters(),
            self.momentum_encoder.parameters(),
            strict=True,
        ):
            p_m.data.copy_(p_b.data)
            p_m.requires_grad = False

    @torch.no_grad()
    def _update_momentum_encoder(self, m: float) -> None:
        for p_b, p_m in zip(
            self.base_encoder.parameters(),
            self.momentum_encoder.parameters(),
            strict=True,
        ):
            p_m.data = p_m.data * m + p_b.data * (1.0 - m)

    def contrastive_loss(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / self.T
        labels = torch.arange(logits.shape[0], dtype=torch.long)
        return F.cross_entropy(logits, labels) * (2 * self.T)

    def forward(self, x1: Tensor, x2: Tensor, m: float) -> Tensor:
        q1 = self.predictor(self.base_encoder(x1))
        q2 = self.predictor(self.base_encoder(x2))
        with torch.no_grad():
            self._update_momentum_encoder(m)
            k1 = self.momentum_encoder(x1)
            k2 = self.momentum_encoder(x2)
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)


def plain_moco(preset: dict[str, Any]) -> Any:
    def run(steps: int, precision: str) -> list[float]:
        torch.manual_seed(0)
        batch = preset["moco_batch"]
        model = PlainMoCoV3(
            preset["backbone"],
            preset["heads"]["projection_dim"],
            preset["heads"]["projection_hidden_dim"],
            TEMPERATURE,
        )
        lr = BASE_LR * batch / 256
        optimizer = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.1)
        autocast = precision == "bf16-mixed"
        data = loader(batch, steps, _img_size(preset), 2)
        starts = []
        model.train()
        for i, (images, _) in enumerate(data):
            starts.append(time.perf_counter())
            progress = i / steps  # main_moco.py: epoch + i / iters_per_epoch
            for group in optimizer.param_groups:  # adjust_learning_rate
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * progress))
            m = 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - 0.99)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(images[0], images[1], m)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        starts.append(time.perf_counter())
        return [b - a for a, b in zip(starts, starts[1:], strict=False)]

    return run


# -- MAE: ours and lightly's benchmark module --------------------------------
class LightlyBenchmarkMAE(pl.LightningModule):
    """lightly's benchmarks/imagenet/vitb16/mae.py ``MAE`` (pinned above), with
    the timm ViT and the decoder sizes as arguments instead of ViT-B/16 and
    512/8/16; everything else as there."""

    def __init__(
        self,
        batch_size_per_device: int,
        num_classes: int,
        backbone: dict[str, Any],
        decoder_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
    ) -> None:
        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM
        from lightly.utils.benchmarking import OnlineLinearClassifier

        super().__init__()
        self.save_hyperparameters()
        self.batch_size_per_device = batch_size_per_device
        kwargs = {k: v for k, v in backbone.items() if k != "name"}
        vit = timm.create_model(backbone["name"], **kwargs)
        self.mask_ratio = 0.75
        self.patch_size = vit.patch_embed.patch_size[0]
        self.sequence_length = vit.patch_embed.num_patches + vit.num_prefix_tokens
        mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        torch.nn.init.normal_(mask_token, std=0.02)
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder = MAEDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            patch_size=self.patch_size,
            embed_dim=vit.embed_dim,
            decoder_embed_dim=decoder_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            mlp_ratio=4.0,
            proj_drop_rate=0.0,
            attn_drop_rate=0.0,
            mask_token=mask_token,
        )
        self.criterion = nn.MSELoss()
        self.online_classifier = OnlineLinearClassifier(
            feature_dim=vit.embed_dim, num_classes=num_classes
        )

    def forward_decoder(self, x_encoded: Tensor, idx_keep: Tensor, idx_mask: Tensor):
        from lightly.models import utils

        batch_size = x_encoded.shape[0]
        x_decode = self.decoder.embed(x_encoded)
        x_masked = utils.repeat_token(
            self.decoder.mask_token, (batch_size, self.sequence_length)
        )
        x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_decoded = self.decoder.decode(x_masked)
        x_pred = utils.get_at_index(x_decoded, idx_mask)
        return self.decoder.predict(x_pred)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        from lightly.models import utils

        images, targets = batch[0], batch[1]
        images = images[0]
        batch_size = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch_size, self.sequence_length),
            mask_ratio=self.mask_ratio,
            device=images.device,
        )
        features = self.backbone.encode(images=images, idx_keep=idx_keep)
        predictions = self.forward_decoder(features, idx_keep, idx_mask)
        patches = utils.patchify(images, self.patch_size)
        target = utils.get_at_index(patches, idx_mask - 1)
        loss = self.criterion(predictions, target)
        self.log(
            "train_loss", loss, prog_bar=True, sync_dist=True, batch_size=len(targets)
        )
        cls_loss, cls_log = self.online_classifier.training_step(
            (features[:, 0].detach(), targets), batch_idx
        )
        self.log_dict(cls_log, sync_dist=True, batch_size=len(targets))
        return loss + cls_loss

    def configure_optimizers(self) -> Any:
        from lightly.models import utils
        from lightly.utils.scheduler import CosineWarmupScheduler

        params, params_no_weight_decay = utils.get_weight_decay_parameters(
            [self.backbone, self.decoder]
        )
        optimizer = torch.optim.AdamW(
            [
                {"name": "mae", "params": params},
                {
                    "name": "mae_no_weight_decay",
                    "params": params_no_weight_decay,
                    "weight_decay": 0.0,
                },
                {
                    "name": "online_classifier",
                    "params": self.online_classifier.parameters(),
                    "weight_decay": 0.0,
                },
            ],
            lr=1.5e-4 * self.batch_size_per_device * self.trainer.world_size / 256,
            weight_decay=0.05,
            betas=(0.9, 0.95),
        )
        total = self.trainer.estimated_stepping_batches
        scheduler = {
            # lightly: warmup = 40 of its 100+ epochs; here a tenth of the steps
            # (the same scheduler object and per-step interval).
            "scheduler": CosineWarmupScheduler(
                optimizer=optimizer, warmup_epochs=total / 10, max_epochs=total
            ),
            "interval": "step",
        }
        return [optimizer], [scheduler]


def ours_mae(preset: dict[str, Any], workdir: Path) -> Any:
    def run(steps: int, precision: str) -> list[float]:
        torch.manual_seed(0)
        module = MAE(
            batch_size_per_device=preset["mae_batch"],
            num_classes=10,
            backbone=preset["backbone"],
            **preset["decoder"],
        )
        data = loader(preset["mae_batch"], steps, _img_size(preset), 1)
        return fit_timed(module, data, steps, precision, workdir)

    return run


def lightly_mae(preset: dict[str, Any], workdir: Path) -> Any:
    def run(steps: int, precision: str) -> list[float]:
        torch.manual_seed(0)
        module = LightlyBenchmarkMAE(
            preset["mae_batch"], 10, preset["backbone"], **preset["decoder"]
        )
        data = loader(preset["mae_batch"], steps, _img_size(preset), 1)
        return fit_timed(module, data, steps, precision, workdir)

    return run


def _img_size(preset: dict[str, Any]) -> int:
    return int(preset["backbone"].get("img_size", 224))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
    parser.add_argument("--precision", default="32-true", help="or bf16-mixed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps a round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["moco", "mae"])
    parser.add_argument("--tag", default="")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        common = dict(rounds=args.rounds, steps=args.steps, warmup=args.warmup)
        p = args.precision
        if "moco" in args.cases:
            pairs.append(
                paired(
                    "moco",
                    (
                        "ours: GraftedMoCo + Grafting/anchor, Lightning",
                        ours_moco(preset, workdir),
                        p,
                    ),  # fmt: skip
                    (
                        "plain MoCo v3 loop (moco-v3 main_moco.py)",
                        plain_moco(preset),
                        p,
                    ),  # fmt: skip
                    **common,
                )
            )
        if "mae" in args.cases:
            pairs.append(
                paired(
                    "mae",
                    ("ours: MAE", ours_mae(preset, workdir), p),
                    ("lightly benchmark MAE", lightly_mae(preset, workdir), p),
                    **common,
                )
            )
    _write(args, preset, pairs)


def _write(args: argparse.Namespace, preset: dict, pairs: list[Pair]) -> None:
    command = "python benchmarks/overhead_bench.py " + " ".join(sys.argv[1:])
    lines = [
        f"# Step overhead against references ({args.preset}, {args.precision})",
        "",
        f"`{command.strip()}`: {environment()}; backbone {preset['backbone']}, "
        f"heads {preset['heads']}, decoder {preset['decoder']}, MoCo batch "
        f"{preset['moco_batch']}, MAE batch {preset['mae_batch']}; {args.rounds} "
        f"rounds of {args.warmup} warm-up + {args.steps} timed steps, sides "
        "alternating first; s/step = median step of a round (batch start to next "
        "batch start, data and logging included). Target: A / B <= 1.03.",
        "",
        TABLE_HEAD,
        *[pair.row() for pair in pairs],
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    name = "overhead" + (f"_{args.tag}" if args.tag else "") + ".md"
    (args.output / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
