"""KNNMonitor: reads and logs only; DDP over 2 gloo processes equals 1 process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers.logger import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightly_graft.errors import GraftError
from lightly_graft.functional.accuracy import top_accuracy
from lightly_graft.functional.knn import knn_classify
from lightly_graft.training.knn_monitor import KNNMonitor


class ToyModule(pl.LightningModule):
    """A small model whose forward(images) returns features (not a core method)."""

    def __init__(self, norm: bool = True, lr: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(16, 16)]
        if norm:
            layers += [nn.BatchNorm1d(16), nn.Dropout(0.5)]
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Linear(16, 8))
        self.lr = lr

    def forward(self, images):
        return self.net(images)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict]] = []

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.records.append((step, dict(metrics)))


def _loader(size: int, seed: int, batch_size: int = 8) -> DataLoader:
    """4 classes of 1x4x4 images: class centroids plus noise."""
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, 4, (size,), generator=generator)
    images = centroids[labels] + 0.8 * torch.randn(size, 1, 4, 4, generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def _monitor(**kwargs) -> KNNMonitor:
    kwargs.setdefault("k", 10)
    return KNNMonitor(_loader(37, seed=1), _loader(23, seed=2), **kwargs)


def _trainer(max_epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_evaluate__leaves_module_state_unchanged():
    torch.manual_seed(0)
    module = ToyModule()
    module.train()
    module.net[2].eval()  # a frozen BatchNorm inside a training model
    module.net[1].weight.requires_grad_(False)
    modes = [m.training for m in module.modules()]
    state = {k: v.clone() for k, v in module.state_dict().items()}
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    result = _monitor().evaluate(module)

    assert set(result) == {"top1", "top5", "seconds"}
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    assert [m.training for m in module.modules()] == modes
    assert not module.net[1].weight.requires_grad
    for key, value in module.state_dict().items():  # parameters and BN statistics
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1])
    assert random.getstate() == rng[2]


def test_evaluate__equals_knn_classify_on_eval_features():
    torch.manual_seed(0)
    module = ToyModule()
    monitor = _monitor()
    result = monitor.evaluate(module)
    module.eval()
    with torch.no_grad():
        bank_images, bank_labels = monitor.bank_loader.dataset.tensors
        query_images, query_labels = monitor.query_loader.dataset.tensors
        pred = knn_classify(
            module(query_images), module(bank_images), bank_labels, 4, k=10
        )
    top1, top5 = top_accuracy(pred, query_labels)
    assert (result["top1"], result["top5"]) == (top1, top5)
    assert 0.3 < top1 < 1.0  # informative, not trivial: the test can fail


def test_monitor__logs_metrics_and_history_during_fit():
    torch.manual_seed(0)
    logger = RecordingLogger()
    monitor = _monitor(at_train_start=True)
    trainer = _trainer(2, logger=logger, callbacks=[monitor])
    trainer.fit(ToyModule(lr=0.1), train_dataloaders=_loader(32, seed=3))

    assert [(h["epoch"], h["step"]) for h in monitor.history] == [
        (0, 0),
        (1, 2),
        (2, 4),
    ]
    keys = {"knn/top1", "knn/top5", "knn/seconds"}
    logged = [metrics for _, metrics in logger.records if keys <= set(metrics)]
    assert len(logged) == 3
    for entry, metrics in zip(monitor.history, logged, strict=True):
        assert metrics["knn/top1"] == pytest.approx(entry["top1"])
        assert 0.0 <= metrics["knn/top1"] <= metrics["knn/top5"] <= 1.0
    assert keys <= set(trainer.callback_metrics)


def test_monitor__every_n_epochs():
    monitor = _monitor(every_n_epochs=2)
    _trainer(5, logger=False, callbacks=[monitor]).fit(
        ToyModule(), train_dataloaders=_loader(32, seed=3)
    )
    assert [h["epoch"] for h in monitor.history] == [2, 4]


def test_monitor__state_dict_round_trip():
    monitor = _monitor()
    monitor.history.append({"epoch": 1, "step": 5, "top1": 0.5, "top5": 0.9})
    restored = _monitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.history == monitor.history


def test_monitor__rejects_every_n_epochs_zero():
    with pytest.raises(GraftError, match="every_n_epochs must be >= 1"):
        _monitor(every_n_epochs=0)


class _SavingMonitor(KNNMonitor):
    """Writes each rank's history to a file (spawned ranks return nothing)."""

    def __init__(self, out_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.history))


@pytest.mark.distributed
@pytest.mark.slow
def test_monitor__ddp_two_processes_equal_one_process(tmp_path):
    torch.manual_seed(0)
    module = ToyModule(norm=False, lr=0.0)  # weights stay as they are
    # 37 bank and 23 query samples: uneven shards (19 + 18, 12 + 11).
    single = _monitor().evaluate(module)
    monitor = _SavingMonitor(
        str(tmp_path),
        bank_loader=_loader(37, seed=1),
        query_loader=_loader(23, seed=2),
        k=10,
        at_train_start=True,
    )
    trainer = _trainer(
        1, devices=2, strategy="ddp_spawn", logger=False, callbacks=[monitor]
    )
    trainer.fit(module, train_dataloaders=_loader(32, seed=3))

    for rank in (0, 1):
        history = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert [h["epoch"] for h in history] == [0, 1]
        for entry in history:
            assert (entry["top1"], entry["top5"]) == (single["top1"], single["top5"])
    assert trainer.callback_metrics["knn/top1"].item() == pytest.approx(single["top1"])
