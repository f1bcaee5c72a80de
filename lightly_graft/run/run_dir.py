"""The run directory ``<output_dir>/<name>/`` and the never-lose-work policy.

Layout::

    runs/<name>/recipe.yaml          resolved recipe of the run
    runs/<name>/<stage>/             one folder per stage:
        last.ckpt, best-knn-*.ckpt   Lightning checkpoints (ModelCheckpoint)
        on_exception.ckpt            written when training is interrupted (Ctrl-C)
        recipe.yaml                  the resolved recipe, beside the checkpoints
        metrics.csv, hparams.yaml    CSVLogger; tensorboard/ if installed
        encoder.pt                   the stage's final online encoder
        done.json                    written when the stage finished
    runs/<name>/backbone.pt|.json    final online encoder (timm state dict + spec)
    runs/<name>/report.md, knn.png   the report

Policy: an existing run directory is never overwritten. Without ``resume`` the
run is refused with a message that says what the folder holds and the options.
With ``resume`` the saved recipe must equal the current one (else refused,
naming the keys that differ); finished stages (``done.json``) are skipped and
their final checkpoint is handed on; an interrupted stage continues from its
newest checkpoint (``last.ckpt`` or ``on_exception.ckpt``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightly_graft.errors import CheckpointError, GraftError
from lightly_graft.files import write_atomic
from lightly_graft.recipes.validation import join
from lightly_graft.recipes.yaml_io import read_yaml
from lightly_graft.run.lock import LOCK

DONE = "done.json"
RECIPE = "recipe.yaml"
RESUMABLE = ("last.ckpt", "on_exception.ckpt")


class RunExistsError(GraftError):
    """The run directory exists and resuming was not asked for, or cannot be."""


def checkpoint_problem(path: Path) -> str | None:
    """Why a Lightning checkpoint of this run cannot be resumed from, or None."""
    import torch

    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        # Our own file, written by Lightning (it holds more than tensors).
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated files raise many types
        return f"is unreadable ({type(error).__name__}: truncated or corrupt)"
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        return "is not a Lightning checkpoint (no state_dict)"
    if not all(
        bool(torch.isfinite(v).all())
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    ):
        return "has non-finite weights"
    return None


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        items: Any = ((str(key), value) for key, value in tree.items())
    elif isinstance(tree, list) and any(isinstance(v, dict | list) for v in tree):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out |= _leaves(value, join(prefix, key))
    return out


def differing_keys(old: Any, new: Any) -> list[str]:
    """Key paths whose values differ between two plain recipe trees."""
    a, b = _leaves(old), _leaves(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "∅") != b.get(k, "∅"))


def shown_keys(keys: Sequence[str], most: int = 8) -> str:
    """The first ``most`` key paths for a message, then " ..." if there are more."""
    return ", ".join(keys[:most]) + (" ..." if len(keys) > most else "")


@dataclass(frozen=True)
class RunDirectory:
    """Paths and state of one run folder."""

    root: Path

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def read_done(self, stage: str) -> tuple[dict[str, Any] | None, str | None]:
        """(``done.json`` of a finished stage or None, why an existing one is
        unusable or None)."""
        path = self.stage_dir(stage) / DONE
        if not path.is_file():
            return None, None
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return None, f"'{path}' is corrupt ({type(error).__name__})"
        if not isinstance(info, dict) or "seconds" not in info:
            return None, f"'{path}' is corrupt (no 'seconds')"
        if not (self.stage_dir(stage) / str(info.get("encoder", ""))).is_file():
            return None, f"'{path}' names a missing encoder"
        return info, None

    def mark_done(self, stage: str, info: dict[str, Any]) -> None:
        path = self.stage_dir(stage) / DONE
        write_atomic(path, json.dumps(info, indent=2, sort_keys=True) + "\n")

    def checkpoints(self, stage: str) -> list[Path]:
        """The resumable checkpoints of a stage that exist, newest first."""
        found = [p for n in RESUMABLE if (p := self.stage_dir(stage) / n).is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def resume_checkpoint(self, stage: str) -> Path | None:
        """The newest usable checkpoint of an unfinished stage, or None; an
        unusable one (``checkpoint_problem``) is passed over with a line saying
        so. Raises ``CheckpointError`` if checkpoints exist but none is usable."""
        found = self.checkpoints(stage)
        problems: list[str] = []
        for path in found:
            problem = checkpoint_problem(path)
            if problem is None:
                for bad in problems:
                    print(f"stage '{stage}': {bad}; resuming from {path} instead")
                return path
            problems.append(f"{path} {problem}")
        if problems:
            raise CheckpointError(
                f"cannot resume stage '{stage}': {'; '.join(problems)}; delete "
                f"{'it' if len(problems) == 1 else 'them'} to restart the stage from "
                "its beginning with --resume, or start a new run with --output"
            )
        return None

    def has_contents(self) -> bool:
        """Whether the folder exists and holds anything besides its lock file."""
        return self.root.is_dir() and any(p.name != LOCK for p in self.root.iterdir())

    def holds_work(self) -> bool:
        """Whether the folder holds anything a retry must not lose: a
        checkpoint, a finished stage, an encoder or a backbone."""
        patterns = ("*.ckpt", DONE, "encoder.pt", "backbone.pt")
        return any(next(self.root.rglob(p), None) is not None for p in patterns)

    def clear(self, *, keep: set[str], remove_root: bool) -> None:
        """Removes what a failed first attempt wrote (see ``holds_work``)."""
        for path in self.root.iterdir():
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if remove_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def prepare(self, recipe_plain: dict[str, Any], *, resume: bool) -> None:
        """Applies the policy of the module docstring to the resolved recipe as
        plain data (``derived`` is not compared); raises ``RunExistsError``."""
        if not self.has_contents():
            return
        stages = [s["name"] for s in recipe_plain["stages"]]
        done = [s for s in stages if self.read_done(s)[0] is not None]
        partial = [s for s in stages if s not in done and self.checkpoints(s)]
        state = f"stages done: {', '.join(done) or 'none'}"
        if partial:
            state += f"; interrupted with a checkpoint: {', '.join(partial)}"
        if not resume:
            raise RunExistsError(
                f"run directory '{self.root}' already exists ({state}); nothing was "
                "overwritten. Continue it with --resume, or start a new run with "
                "--output DIR or --set name=NEW_NAME (or delete the folder)"
            )
        saved_file = self.root / RECIPE
        if not saved_file.is_file():
            raise RunExistsError(
                f"cannot resume '{self.root}': it has no {RECIPE}, so it is not a "
                "lightly-graft run; choose another --output or --set name=NEW_NAME"
            )
        saved = read_yaml(saved_file)
        saved.pop("derived", None)
        current = {k: v for k, v in recipe_plain.items() if k != "derived"}
        changed = differing_keys(saved, current)
        if changed:
            shown = shown_keys(changed)
            raise RunExistsError(
                f"cannot resume '{self.root}': the recipe differs from the one it was "
                f"started with at {shown}; resume with the same recipe and --set "
                "values, or start a new run with --set name=NEW_NAME"
            )
