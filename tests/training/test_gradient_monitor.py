from __future__ import annotations

import math
from typing import Any

import pytest
import pytorch_lightning as pl
import timm
import torch
from lightly.models.modules import MaskedVisionTransformerTIMM
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightly_graft.training.gradient_monitor import GradientConflictMonitor

DEPTH = 3


class ToyMTL(pl.LightningModule):
    """MIM-like + CL-like terms on one tiny ViT, with a BatchNorm head and dropout."""

    def __init__(self, same_terms: bool = False) -> None:
        super().__init__()
        vit = timm.create_model(
            "vit_tiny_patch16_224",
            num_classes=0,
            img_size=16,
            patch_size=4,
            embed_dim=32,
            depth=DEPTH,
            num_heads=2,
        )
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder = nn.Linear(32, 4 * 4 * 3)
        self.head = nn.Sequential(
            nn.Linear(32, 16), nn.BatchNorm1d(16), nn.Dropout(0.2)
        )
        self.same_terms = same_terms

    def loss_terms(self, views: list[Tensor]) -> dict[str, Tensor]:
        tokens = self.backbone.encode(views[0])[:, 1:]  # (B, 16, 32)
        noise = torch.randn_like(tokens[..., :1])  # random, like a mask draw
        mim = (self.decoder(tokens) - noise).pow(2).mean()
        z1 = self.head(self.backbone(views[0]))
        z2 = self.head(self.backbone(views[1]))
        cl = -nn.functional.cosine_similarity(z1, z2).mean()
        return {"mim": mim, "cl": mim * 2 if self.same_terms else cl}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch[0])
        return terms["mim"] + terms["cl"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class TwoViews(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> tuple[list[Tensor], int]:
        generator = torch.Generator().manual_seed(index)
        image = torch.randn(3, 16, 16, generator=generator)
        return [image, image.flip(-1)], index % 2


def _fit(
    module: pl.LightningModule, callbacks: list[pl.Callback], steps: int
) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(TwoViews(), batch_size=4))
    return trainer


def test_monitor__logs_median_per_block_every_n_steps() -> None:
    torch.manual_seed(0)
    monitor = GradientConflictMonitor(every_n_steps=2, window=3)
    trainer = _fit(ToyMTL(), [monitor], steps=5)
    names = {f"grad_conflict/block_{i}" for i in range(DEPTH)}
    assert names <= set(trainer.logged_metrics)
    # steps 0, 2, 4 measured -> three values per block, all cosines.
    for block in range(DEPTH):
        values = list(monitor.history[block])
        assert len(values) == 3
        assert all(-1.0 <= v <= 1.0 for v in values)
        logged = float(trainer.logged_metrics[f"grad_conflict/block_{block}"])
        assert logged == pytest.approx(sorted(values)[1], abs=1e-6)


def test_monitor__window_keeps_last_values() -> None:
    torch.manual_seed(0)
    monitor = GradientConflictMonitor(every_n_steps=1, window=2)
    _fit(ToyMTL(), [monitor], steps=4)
    assert all(len(history) == 2 for history in monitor.history.values())


def test_monitor__does_not_change_training() -> None:
    torch.manual_seed(0)
    plain = ToyMTL()
    observed = ToyMTL()
    observed.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    _fit(plain, [], steps=3)
    torch.manual_seed(1)
    _fit(observed, [GradientConflictMonitor(every_n_steps=1)], steps=3)
    for (name, a), b in zip(
        plain.state_dict().items(), observed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_measure__leaves_grads_and_batchnorm_as_found() -> None:
    torch.manual_seed(0)
    module = ToyMTL().train()
    for param in module.parameters():
        param.grad = torch.full_like(param, 0.5)
    grads = {name: p.grad for name, p in module.named_parameters()}
    norm: Any = module.head[1]
    running_mean = norm.running_mean.clone()
    batch, _ = next(iter(DataLoader(TwoViews(), batch_size=4)))
    cosines = GradientConflictMonitor().measure(module, batch)
    assert sorted(cosines) == list(range(DEPTH))
    for name, param in module.named_parameters():
        assert param.grad is grads[name]
        torch.testing.assert_close(param.grad, torch.full_like(param, 0.5))
    torch.testing.assert_close(norm.running_mean, running_mean, rtol=0, atol=0)
    assert int(norm.num_batches_tracked) == 0


def test_measure__identical_terms_give_one() -> None:
    torch.manual_seed(0)
    batch, _ = next(iter(DataLoader(TwoViews(), batch_size=4)))
    cosines = GradientConflictMonitor().measure(ToyMTL(same_terms=True), batch)
    assert all(math.isclose(v, 1.0, abs_tol=1e-9) for v in cosines.values())


def test_measure__configurable_term_names() -> None:
    torch.manual_seed(0)
    batch, _ = next(iter(DataLoader(TwoViews(), batch_size=4)))
    with pytest.raises(KeyError, match="'mim', 'cl'|\\['cl', 'mim'\\]"):
        GradientConflictMonitor(terms=("mim", "ctr")).measure(ToyMTL(), batch)
    cosines = GradientConflictMonitor(terms=("cl", "mim")).measure(ToyMTL(), batch)
    assert len(cosines) == DEPTH


def test_monitor__rejects_module_without_loss_terms() -> None:
    class NoTerms(ToyMTL):
        loss_terms = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="loss_terms"):
        GradientConflictMonitor().setup(None, NoTerms(), "fit")  # type: ignore[arg-type]


def test_monitor__rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        GradientConflictMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="two different"):
        GradientConflictMonitor(terms=("mim", "mim"))


@pytest.mark.slow
def test_monitor__real_mtl_logs_and_trains_as_without() -> None:
    from graft_testing import fit_tiny, tiny_method

    torch.manual_seed(0)
    plain = tiny_method("mtl", num_classes=4)
    observed = tiny_method("mtl", num_classes=4)
    observed.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    fit_tiny(plain, num_views=3, max_steps=2)
    torch.manual_seed(1)
    trainer = fit_tiny(
        observed, num_views=3, max_steps=2, callbacks=[GradientConflictMonitor(1)]
    )
    depth = len(observed.backbone.vit.blocks)
    logged = {k for k in trainer.logged_metrics if k.startswith("grad_conflict/")}
    assert logged == {f"grad_conflict/block_{i}" for i in range(depth)}
    for (name, a), b in zip(
        plain.state_dict().items(), observed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
