"""Degenerate-case equivalences (STYLE.md, principle 4)."""

from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from graft_testing import RandomViews, fit_tiny, tiny_method
from lightly.models import utils
from torch.testing import assert_close

from lightly_graft import Grafting
from lightly_graft.modules.backbone import BackboneSpec
from lightly_graft.training.checkpoints import export_timm

LR = 1e-3
STEPS = 3


def _moco_v3_loss(q1, q2, k1, k2, T=0.2):
    """moco-v3's MoCo.contrastive_loss, both directions (one process)."""

    def ctr(q, k):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / T
        return F.cross_entropy(logits, torch.arange(logits.shape[0])) * (2 * T)

    return ctr(q1, k2) + ctr(q2, k1)


def _plain_moco_v3(model, loader, batch_size):
    """A plain MoCo v3 training loop (facebookresearch/moco-v3 main_moco.py, ``train``,
    https://github.com/facebookresearch/moco-v3/blob/c349e6e24f40d3fedb22d973f92defa4cedf37a7/main_moco.py#L321-L370):
    momentum update then keys, symmetric loss, AdamW, cosine LR, no stages."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR * batch_size / 256, weight_decay=0.0)
    losses, step = [], 0
    for views, _ in itertools.chain(loader, loader):  # two epochs of two batches
        if step == STEPS:
            break
        m = 1 - 0.5 * (1 + math.cos(math.pi * step / (STEPS - 1))) * (1 - 0.99)
        with torch.no_grad():
            for q, k in [
                (model.backbone, model.backbone_momentum),
                (model.projector, model.projector_momentum),
            ]:
                for pq, pk in zip(q.parameters(), k.parameters(), strict=False):
                    pk.mul_(m).add_(pq, alpha=1 - m)
        x1, x2 = views
        q1 = model.predictor(model.projector(model.backbone(x1)))
        q2 = model.predictor(model.projector(model.backbone(x2)))
        with torch.no_grad():
            k1 = model.projector_momentum(model.backbone_momentum(x1))
            k2 = model.projector_momentum(model.backbone_momentum(x2))
        loss = _moco_v3_loss(q1, q2, k1, k2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        for group in optimizer.param_groups:  # cosine, no warmup
            group["lr"] = (
                LR
                * batch_size
                / 256
                * 0.5
                * (1 + math.cos(math.pi * step / (STEPS - 1)))
            )
    return losses


def test_zero_grafted_blocks__equals_plain_moco_v3(tmp_path) -> None:
    torch.manual_seed(0)
    mae = tiny_method("mae")
    export_timm(
        tmp_path / "mim.pt",
        mae.backbone.vit,
        BackboneSpec.coerce(mae.hparams["backbone"]),
    )
    optimizer = {
        "stage_lrs": (LR, LR, LR),
        "num_stages": 3,
        "weight_decay": 0.0,
        "betas": (0.9, 0.999),
        "warmup_epochs": 0,
    }
    torch.manual_seed(1)
    grafted = tiny_method("grafted_moco", num_classes=0, optimizer=optimizer)
    plain = copy.deepcopy(grafted)

    import pytorch_lightning as pl

    class Record(pl.Callback):
        losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(outputs["loss"].item())

    record = Record()
    fit_tiny(
        grafted,
        max_steps=STEPS,
        callbacks=[Grafting(tmp_path / "mim.pt", format="timm", num_blocks=0), record],
    )
    loader = torch.utils.data.DataLoader(RandomViews(2), batch_size=8, shuffle=False)
    plain_losses = _plain_moco_v3(plain.train(), loader, batch_size=8)
    assert_close(
        torch.tensor(record.losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6
    )
    for (name, a), b in zip(
        grafted.state_dict().items(), plain.state_dict().values(), strict=False
    ):
        assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_mask_ratio_zero__equals_unmasked_forward() -> None:
    torch.manual_seed(0)
    mae = tiny_method("mae").eval()
    images = torch.randn(4, 3, 32, 32)
    idx_keep, idx_mask = utils.random_token_mask(
        (4, mae.backbone.sequence_length), mask_ratio=0.0
    )
    assert idx_mask.shape[1] == 0
    masked = mae.backbone.encode(images, idx_keep=idx_keep)[:, 0]
    assert_close(masked, mae(images), rtol=1e-5, atol=1e-5)
