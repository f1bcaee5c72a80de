"""One stage of a run: a seeded Lightning ``Trainer`` with the stage's callbacks,
writing the stage folder of :mod:`~lightly_graft.run.run_dir`'s layout; the next
stage grafts from its ``encoder.pt`` (``lightly_graft`` format).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
)
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from lightly_graft.errors import CheckpointError, GraftError
from lightly_graft.files import write_atomic
from lightly_graft.recipes.loader import save_recipe
from lightly_graft.recipes.schema import PREVIOUS, Recipe, StageConfig
from lightly_graft.run.build import (
    backbone_spec,
    build_datamodule,
    build_grafting,
    build_method,
    knn_monitor,
)
from lightly_graft.run.report import StageSummary, read_knn_history
from lightly_graft.run.run_dir import DONE, RECIPE, RunDirectory
from lightly_graft.training.checkpoints import save_backbone
from lightly_graft.training.divergence import FiniteGuard, check_finite
from lightly_graft.training.gradient_monitor import GradientConflictMonitor
from lightly_graft.training.grafting import Grafting
from lightly_graft.training.resume_state import (
    AtomicCheckpointIO,
    ResumeState,
    StageClock,
)

_TRAINER_ARGS = set(inspect.signature(pl.Trainer.__init__).parameters)
ENCODER = "encoder.pt"
GRAFT_REPORT = "graft_report.json"
UNREADABLE = "unreadable.txt"
# Lightning warnings that this layout triggers on purpose: the stage folder
# holds recipe.yaml before the logger and checkpoints arrive, and with
# OnExceptionCheckpoint a fit without ckpt_path looks for a "last" checkpoint
# (the resume decision is made by RunDirectory, which passes ckpt_path itself).
_EXPECTED_WARNINGS = (
    r"Experiment logs directory .* exists and is not empty",
    r"Checkpoint directory .* exists and is not empty",
    r"`\.fit\(ckpt_path=None\)` was called without a model",
    r"\.fit\(ckpt_path=\"last\"\) is set, but there is no last checkpoint",
    # val_dataloader() is [] unless online evaluation is on: no validation loop.
    r"Total length of `list` across ranks is zero",
    # Lightning 2.6 calling a torch 2.14 deprecated API internally.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def is_global_zero() -> bool:
    """Whether this process is rank 0 (always, without DDP; Lightning reads the
    rank from ``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID``)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def loggers(stage_dir: Path) -> list[Logger]:
    """CSV always (``metrics.csv`` in the stage folder); TensorBoard if installed."""
    out: list[Logger] = [CSVLogger(save_dir=stage_dir, name="", version="")]
    if importlib.util.find_spec("tensorboard") is not None:
        out.append(
            TensorBoardLogger(save_dir=stage_dir, name="tensorboard", version="")
        )
    return out


def callbacks(
    stage: StageConfig, stage_dir: Path, datamodule: Any
) -> list[pl.Callback]:
    """Monitoring and checkpointing callbacks of a stage (Grafting is added apart)."""
    out: list[pl.Callback] = [
        FiniteGuard(stage.name, stage_dir),
        LearningRateMonitor(logging_interval="step"),
        ModelCheckpoint(
            dirpath=stage_dir, filename="last", enable_version_counter=False
        ),
        OnExceptionCheckpoint(dirpath=stage_dir),
    ]
    knn = stage.knn
    if knn.every_n_epochs > 0:
        monitor = knn_monitor(knn, datamodule, every_n_epochs=knn.every_n_epochs)
        best = ModelCheckpoint(
            dirpath=stage_dir,
            filename="best-knn-epoch{epoch}",
            monitor="knn/top1",
            mode="max",
            every_n_epochs=knn.every_n_epochs,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        out = [monitor, *out, best]
    if stage.gradient_conflict is not None:
        out.insert(
            0, GradientConflictMonitor(**stage.gradient_conflict.library_arguments())
        )
    return out


def stage_summary(stage: StageConfig, stage_dir: Path, done: dict) -> StageSummary:
    """The summary of a finished stage from its ``done.json`` values."""
    return StageSummary(
        stage.name,
        stage.method,
        stage.epochs,
        float(done["seconds"]),
        read_knn_history(stage_dir),
        int(done.get("unreadable_images", 0)),
    )


@dataclass
class StageRunner:
    """Runs the stages of one run (see the module docstring)."""

    recipe: Recipe
    run_dir: RunDirectory
    derived: dict[str, Any]
    progress_bar: bool = True
    #: Seconds that earlier sessions spent on the stages run so far (finished
    #: stages skipped, and a resumed stage up to its checkpoint).
    earlier_seconds: float = 0.0

    def grafting(
        self, index: int, stage: StageConfig, encoders: dict[str, Path]
    ) -> Grafting | None:
        """The stage's ``Grafting`` callback (from its checkpoint or an earlier
        stage's encoder), or None."""
        graft = stage.graft
        if graft is None:
            return None
        if graft.checkpoint is not None:
            checkpoint = Path(graft.checkpoint).expanduser()
            return build_grafting(stage, checkpoint, graft.format or "")
        previous = self.recipe.stages[index - 1].name
        name = previous if graft.from_ == PREVIOUS else str(graft.from_)
        return build_grafting(stage, encoders[name], "lightly_graft")

    def run(
        self,
        index: int,
        encoders: dict[str, Path],
        *,
        method: Any = None,
        datamodule: Any = None,
    ) -> tuple[StageSummary, Path]:
        """Trains stage ``index`` (or skips it if an earlier session finished it);
        returns its summary and the path of its final encoder."""
        stage = self.recipe.stages[index]
        stage_dir = self.run_dir.stage_dir(stage.name)
        encoder = stage_dir / ENCODER
        done, problem = self.run_dir.read_done(stage.name)
        if problem is not None:
            if not self.run_dir.checkpoints(stage.name):
                raise CheckpointError(
                    f"{problem} and stage '{stage.name}' has no checkpoint to resume "
                    f"from; delete {stage_dir / DONE} to train the stage again with "
                    "--resume, or start a new run with --output"
                )
            if is_global_zero():
                print(
                    f"stage '{stage.name}': {problem}; resuming it from its checkpoint"
                )
        if done is not None:
            print(f"stage '{stage.name}': finished earlier, skipped (--resume)")
            self.earlier_seconds += float(done["seconds"])
            return stage_summary(stage, stage_dir, done), encoder
        clock = StageClock()
        # Chosen (and checked) before anything is written into the stage folder.
        resume = self.run_dir.resume_checkpoint(stage.name)
        if is_global_zero():
            stage_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(self.recipe, stage_dir / RECIPE, derived=self.derived)
            keep_metrics(stage_dir)
        pl.seed_everything(self.recipe.seed, workers=True, verbose=False)
        method = method if method is not None else build_method(self.recipe, stage)
        if datamodule is None:
            datamodule = build_datamodule(self.recipe, stage)
            datamodule.setup()
        datamodule.unreadable_log = stage_dir / UNREADABLE
        grafting = self.grafting(index, stage, encoders)
        # ResumeState before the checkpoints: its epoch-end snapshot precedes theirs.
        extra = [
            *([grafting] if grafting is not None else []),
            ResumeState(datamodule),
            clock,
            *callbacks(stage, stage_dir, datamodule),
        ]
        batches = batches_per_epoch(stage, datamodule)
        trainer = pl.Trainer(
            max_epochs=stage.epochs,
            # accelerator, devices, num_nodes, strategy; precision, gradient
            # accumulation and clipping, limit_train_batches.
            **self.recipe.model_dump(include=_TRAINER_ARGS),
            **stage.model_dump(include=_TRAINER_ARGS),
            num_sanity_val_steps=0,
            log_every_n_steps=max(1, min(50, batches // 2)),
            logger=loggers(stage_dir),
            callbacks=extra,
            default_root_dir=stage_dir,
            enable_progress_bar=self.progress_bar,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
        )
        print(f"stage '{stage.name}' ({stage.method}): training in {stage_dir}")
        try:
            fit(trainer, method, datamodule, resume, stage_dir)
        finally:
            report = grafting.report if grafting is not None else None
            if report is not None and is_global_zero():  # what it loaded and missed
                text = json.dumps(report.to_dict(), indent=1) + "\n"
                write_atomic(stage_dir / GRAFT_REPORT, text)
        seconds = clock.seconds()
        self.earlier_seconds += clock.before
        skipped = count_unreadable(stage_dir)
        if skipped and is_global_zero():
            print(
                f"stage '{stage.name}': {skipped} unreadable images skipped "
                f"(data.skip_unreadable), listed in {stage_dir / UNREADABLE}"
            )
        check_finite(
            method,
            stage=stage.name,
            step=trainer.global_step,
            kept=f"its checkpoints are in {stage_dir}",
        )
        info = {
            "encoder": ENCODER,
            "seconds": seconds,
            "epochs": trainer.current_epoch,
            "unreadable_images": skipped,
        }
        if is_global_zero():
            save_backbone(encoder, method.backbone.vit, backbone_spec(self.recipe))
            self.run_dir.mark_done(stage.name, info)
        # The other ranks graft the next stage from rank 0's encoder.pt.
        trainer.strategy.barrier("encoder saved")
        return stage_summary(stage, stage_dir, info), encoder


def count_unreadable(stage_dir: Path) -> int:
    """Distinct images skipped as unreadable in a stage (``unreadable.txt``)."""
    path = stage_dir / UNREADABLE
    if not path.is_file():
        return 0
    return len({line for line in path.read_text().splitlines() if line})


def batches_per_epoch(stage: StageConfig, datamodule: Any) -> int:
    """Training batches per epoch after ``limit_train_batches``."""
    total = len(datamodule.train_dataloader())
    limit = stage.limit_train_batches
    if limit is None:
        return total
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(total * limit))
    return min(total, int(limit))


def keep_metrics(stage_dir: Path) -> None:
    """Renames an interrupted session's ``metrics.csv`` (Lightning's CSVLogger
    deletes it) to ``metrics-N.csv``; the report reads them all."""
    current = stage_dir / "metrics.csv"
    if current.is_file():
        number = len(list(stage_dir.glob("metrics-*.csv"))) + 1
        current.rename(stage_dir / f"metrics-{number}.csv")


def fit(
    trainer: pl.Trainer,
    method: Any,
    datamodule: Any,
    checkpoint: Path | None,
    stage_dir: Path,
) -> None:
    """``trainer.fit``; a Ctrl-C becomes ``KeyboardInterrupt`` after Lightning has
    written ``on_exception.ckpt`` (Lightning itself calls ``sys.exit(1)``)."""
    try:
        with warnings.catch_warnings():
            for message in _EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            trainer.fit(method, datamodule=datamodule, ckpt_path=checkpoint)
    except GraftError as error:
        lines = str(error).strip().splitlines()
        if len(lines) <= 1:
            raise
        # Raised in a DataLoader worker: torch re-raises it with the worker's
        # traceback in the message; keep the last line, the error itself.
        message = lines[-1].split(": ", 1)[-1]
        raise type(error)(
            f"{message} (the stage's checkpoint is kept in {stage_dir})"
        ) from None
    except SystemExit:
        if not trainer.interrupted:
            raise
    if trainer.interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            f"interrupted: the stage's checkpoint is in {stage_dir}; continue the "
            "run with the same command and --resume",
            file=sys.stderr,
        )
        raise KeyboardInterrupt
