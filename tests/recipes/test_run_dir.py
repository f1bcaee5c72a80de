from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from lightly_graft.errors import CheckpointError
from lightly_graft.run.run_dir import RunDirectory, RunExistsError, differing_keys

PLAIN = {
    "name": "r",
    "seed": 0,
    "stages": [{"name": "a", "epochs": 1}, {"name": "b", "epochs": 2}],
}


def test_prepare__new_or_empty_folder_is_fine(tmp_path: Path) -> None:
    RunDirectory(tmp_path / "new").prepare(PLAIN, resume=False)
    (tmp_path / "empty").mkdir()
    RunDirectory(tmp_path / "empty").prepare(PLAIN, resume=False)


def test_prepare__existing_run_is_refused_with_its_state(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "encoder.pt").write_bytes(b"x")
    run.mark_done("a", {"seconds": 1, "encoder": "encoder.pt"})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "on_exception.ckpt").write_bytes(b"x")
    with pytest.raises(RunExistsError) as info:
        run.prepare(PLAIN, resume=False)
    message = str(info.value)
    assert "stages done: a" in message and "interrupted with a checkpoint: b" in message
    assert "--resume" in message and "--output" in message


def test_prepare__resume_needs_the_same_recipe(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(
        yaml.safe_dump({**PLAIN, "derived": {"x": 1}})
    )
    RunDirectory(tmp_path).prepare(PLAIN, resume=True)  # derived is ignored
    changed = {**PLAIN, "seed": 1}
    with pytest.raises(RunExistsError, match="differs .* at seed;"):
        RunDirectory(tmp_path).prepare(changed, resume=True)


def test_prepare__resume_of_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a lightly-graft run"):
        RunDirectory(tmp_path).prepare(PLAIN, resume=True)


def test_resume_checkpoint__newest_of_last_and_on_exception(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    (tmp_path / "a").mkdir()
    assert run.resume_checkpoint("a") is None
    last, crash = tmp_path / "a" / "last.ckpt", tmp_path / "a" / "on_exception.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, last)
    torch.save({"state_dict": {"w": torch.zeros(1)}}, crash)
    os.utime(last, (1000, 1000))
    os.utime(crash, (2000, 2000))
    assert run.resume_checkpoint("a") == crash
    os.utime(last, (3000, 3000))
    assert run.resume_checkpoint("a") == last
    last.write_bytes(b"torn")  # newest but unreadable: the older one is used
    os.utime(last, (3000, 3000))
    assert run.resume_checkpoint("a") == crash
    crash.write_bytes(b"")
    with pytest.raises(
        CheckpointError, match="empty.*last.ckpt is unreadable.*delete them"
    ):
        run.resume_checkpoint("a")


def test_differing_keys__nested_paths() -> None:
    new = {**PLAIN, "stages": [{"name": "a", "epochs": 1}, {"name": "b", "epochs": 3}]}
    assert differing_keys(PLAIN, new) == ["stages[1].epochs"]
    assert differing_keys(PLAIN, {**PLAIN, "extra": 1}) == ["extra"]
