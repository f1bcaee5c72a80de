"""Reliability of a run: the NaN stop, the run directory lock, atomic writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from graft_testing import TINY_BACKBONE

from lightly_graft.cli import main
from lightly_graft.errors import CheckpointError
from lightly_graft.files import save_atomic, write_atomic
from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.run.lock import DirectoryLock, DirectoryLockedError
from lightly_graft.training.checkpoints import export_timm, load_backbone
from lightly_graft.training.divergence import DivergenceError, check_finite
from tests.recipes.pipeline_fixtures import write_tiny_recipe


def _one_line_error(err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lightly-graft")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_train__divergence_stops_with_exit_2_and_keeps_finite_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_tiny_recipe(tmp_path)
    run = tmp_path / "run"
    code = main(
        ["train", str(recipe), "--output", str(run)]
        + ["--set", "stages.0.optimizer.base_lr=1e36"]
    )
    assert code == 2
    line = _one_line_error(
        capsys.readouterr().err, "stage 'mim' diverged", "step 1", "learning rate"
    )
    assert "gradient_clip_val" in line and "precision" in line
    assert not (run / "backbone.pt").exists()
    assert not (run / "report.md").exists()
    assert not (run / "mim" / "encoder.pt").exists()
    kept = torch.load(run / "mim" / "on_exception.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values())


def test_check_finite__names_stage_and_step() -> None:
    layer = torch.nn.Linear(2, 2)
    check_finite(layer, stage="s", step=3, kept="k")
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="stage 's' diverged: 1 of 6 .*step 3"):
        check_finite(layer, stage="s", step=3, kept="k")


@pytest.fixture
def nan_backbone(tmp_path: Path) -> Path:
    spec = BackboneSpec.coerce(dict(TINY_BACKBONE))
    vit = build_vit(spec)
    with torch.no_grad():
        vit.blocks[0].attn.qkv.weight.fill_(float("nan"))
    return export_timm(tmp_path / "diverged" / "backbone.pt", vit, spec)


def test_load_backbone__refuses_non_finite_weights(nan_backbone: Path) -> None:
    with pytest.raises(CheckpointError, match="non-finite weights .*diverged"):
        load_backbone(nan_backbone, "timm")


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_eval_and_analyze__refuse_non_finite_weights(
    nan_backbone: Path,
    tmp_path: Path,
    command: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    if command == "analyze":
        args = ["analyze", "--kind", "vic", "--checkpoint", str(nan_backbone)]
        args += ["--format", "timm", "--output", str(out), "--device", "cpu"]
    else:
        args = ["eval", str(nan_backbone), "--protocol", "knn", "--output", str(out)]
        args += ["--data", str(tmp_path), "--device", "cpu"]
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, "non-finite weights")
    assert not out.exists()


def test_lock__second_holder_is_refused_with_pid(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path / "run"):
        with pytest.raises(DirectoryLockedError, match=f"PID {os.getpid()}"):
            DirectoryLock(tmp_path / "run").acquire()
    DirectoryLock(tmp_path / "run").acquire().release()  # free again


def test_lock__stale_lock_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(f"{dead.pid}\n")
    with DirectoryLock(tmp_path / "run") as lock:
        assert lock.holder() == str(os.getpid())


def test_train__refused_while_another_process_holds_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_tiny_recipe(tmp_path)
    run = tmp_path / "run"
    code = (
        "import sys, time; from lightly_graft.run.lock import DirectoryLock; "
        "DirectoryLock(sys.argv[1]).acquire(); print('locked', flush=True); "
        "time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        for resume in ([], ["--resume"]):
            argv = ["train", str(recipe), "--output", str(run), *resume]
            assert main(argv) == 2
            _one_line_error(capsys.readouterr().err, f"PID {holder.pid}", "in use")
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    DirectoryLock(run).acquire().release()  # the kernel dropped the dead holder's lock


def test_write_atomic__interrupted_before_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "done.json"
    write_atomic(target, "old\n")
    ckpt = save_atomic({"w": torch.ones(2)}, tmp_path / "last.ckpt")

    def crash(*args: object) -> None:
        raise OSError("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="between write and rename"):
        write_atomic(target, "new\n")
    with pytest.raises(OSError, match="between write and rename"):
        save_atomic({"w": torch.zeros(2)}, ckpt)
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert torch.equal(torch.load(ckpt)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.json", "last.ckpt"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (kNN on) and its recipe, in one folder."""
    root = tmp_path_factory.mktemp("finished")
    recipe = write_tiny_recipe(root, knn=True)
    assert main(["train", str(recipe), "--output", str(root / "run")]) == 0
    return root


def _copy_run(finished: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(finished / "run", tmp_path / "run")
    return tmp_path / "run"


def _unfinish(run: Path, stage: str) -> None:
    (run / stage / "done.json").unlink()
    (run / stage / "encoder.pt").unlink()
    for name in ("backbone.pt", "report.md"):
        (run / name).unlink()


def test_resume__corrupt_newest_checkpoint_falls_back_to_the_previous(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished, tmp_path)
    _unfinish(run, "cl")
    last = run / "cl" / "last.ckpt"
    torn = run / "cl" / "on_exception.ckpt"
    torn.write_bytes(last.read_bytes()[:1000])  # newer than last.ckpt, truncated
    argv = ["train", str(finished / "tiny.yaml"), "--output", str(run), "--resume"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{torn} is unreadable" in out and f"resuming from {last} instead" in out
    assert (run / "backbone.pt").is_file()


def test_resume__corrupt_done_json_resumes_the_stage_from_its_checkpoint(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished, tmp_path)
    (run / "cl" / "done.json").write_text('{"seconds": 1')  # torn by the old code
    argv = ["train", str(finished / "tiny.yaml"), "--output", str(run), "--resume"]
    assert main(argv) == 0
    assert "is corrupt" in capsys.readouterr().out
    assert '"seconds"' in (run / "cl" / "done.json").read_text()


def test_resume__times_and_knn_rows_add_up_over_sessions(
    finished: Path, tmp_path: Path
) -> None:
    import json

    from lightly_graft.run.report import read_knn_history

    run = _copy_run(finished, tmp_path)
    first = json.loads((run / "cl" / "done.json").read_text())["seconds"]
    knn_before = read_knn_history(run / "cl")
    _unfinish(run, "cl")
    saved = torch.load(run / "cl" / "last.ckpt", weights_only=False)
    clock = next(v for k, v in saved["callbacks"].items() if "StageClock" in k)
    assert 0 < clock["seconds"] <= first
    argv = ["train", str(finished / "tiny.yaml"), "--output", str(run), "--resume"]
    assert main(argv) == 0
    again = json.loads((run / "cl" / "done.json").read_text())["seconds"]
    assert again >= clock["seconds"]
    assert read_knn_history(run / "cl") == knn_before
    assert [p.epoch for p in knn_before] == [1, 2]
    report = (run / "report.md").read_text()
    # The total spans both sessions: at least the two stages' recorded seconds
    # (shown to 0.1 s below 10 s; the tiny run may finish in under a second).
    mim = json.loads((run / "mim" / "done.json").read_text())["seconds"]
    shown = re.search(r"Total wall time: ([0-9.]+) (s|min) ", report)
    assert shown is not None, report
    total = float(shown[1]) * (60 if shown[2] == "min" else 1)
    assert total >= round(mim + again, 1) - 0.1
    assert report.count("| cl | grafted_moco |") == 1
