"""An interrupted and resumed run ends bit-identical to the uninterrupted one.

Each case runs the tiny two-stage recipe (2 epochs x 2 batches per stage) in a
subprocess that signals itself at one point (SIGINT mid-epoch, SIGKILL at an
epoch boundary, SIGKILL between the stages, SIGINT mid-epoch of the second
stage), then resumes it and compares the final weights and every logged loss
and kNN value with an uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.recipes.pipeline_fixtures import write_tiny_recipe

DRIVER = """\
import os, signal, sys
import pytorch_lightning as pl
from lightly_graft.cli import main
from lightly_graft.run import stage as stage_module

STAGE, HOOK, AT, SIG = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


class Signal(pl.Callback):
    def __init__(self, name):
        self.name = name

    def _fire(self, hook, value):
        if (self.name, hook, value) == (STAGE, HOOK, AT):
            os.kill(os.getpid(), getattr(signal, SIG))

    def on_train_start(self, trainer, pl_module):
        self._fire("start", 0)

    def on_train_epoch_start(self, trainer, pl_module):
        self._fire("epoch", trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._fire("step", trainer.global_step)


original = stage_module.callbacks
stage_module.callbacks = lambda s, d, m: [*original(s, d, m), Signal(s.name)]
sys.exit(main(sys.argv[5:]))
"""


def _run(tmp: Path, recipe: Path, output: Path, *point: str, resume: bool = False):
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "OMP_NUM_THREADS": "1"}
    argv = ["train", str(recipe), "--output", str(output)]
    argv += ["--resume"] if resume else []
    return subprocess.run(
        [sys.executable, str(driver), *point, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _metrics(run: Path) -> dict[tuple[str, int, str], str]:
    """(stage, step, key) -> value over every session's CSV (later wins)."""
    out: dict[tuple[str, int, str], str] = {}
    for stage in ("mim", "cl"):
        files = sorted((run / stage).glob("metrics-*.csv")) + [
            run / stage / "metrics.csv"
        ]
        for path in files:
            with path.open() as f:
                for row in csv.DictReader(f):
                    for key in ("train_loss", "knn/top1", "knn/top5"):
                        if row.get(key):
                            out[(stage, int(row["step"]), key)] = row[key]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("reference")
    recipe = write_tiny_recipe(tmp, knn=True)
    done = _run(tmp, recipe, tmp / "run", "none", "none", "0", "SIGINT")
    assert done.returncode == 0, done.stderr[-3000:]
    return recipe, tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "hook", "at", "sig"),
    [
        ("mim", "step", 1, "SIGINT"),  # mid-epoch: on_exception.ckpt after 1 batch
        ("mim", "epoch", 1, "SIGKILL"),  # at an epoch boundary: last.ckpt
        ("cl", "start", 0, "SIGKILL"),  # between the stages
        ("cl", "step", 3, "SIGINT"),  # mid-epoch of the second stage's epoch 1
    ],
)
def test_resume__bit_identical_to_the_uninterrupted_run(
    reference: tuple[Path, Path],
    tmp_path: Path,
    stage: str,
    hook: str,
    at: int,
    sig: str,
) -> None:
    recipe, expected = reference
    run = tmp_path / "run"
    cut = _run(tmp_path, recipe, run, stage, hook, str(at), sig)
    code = 130 if sig == "SIGINT" else -signal.SIGKILL
    assert cut.returncode == code, cut.stderr[-3000:]
    assert not (run / "backbone.pt").exists()
    resumed = _run(tmp_path, recipe, run, "none", "none", "0", "SIGINT", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = torch.load(expected / "backbone.pt")
    got = torch.load(run / "backbone.pt")
    assert want.keys() == got.keys()
    different = [k for k in want if not torch.equal(want[k], got[k])]
    assert not different, different[:5]
    assert _metrics(run) == _metrics(expected)
