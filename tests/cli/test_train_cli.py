from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from lightly_graft.cli import main
from tests.recipes.pipeline_fixtures import write_tiny_recipe


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "RECIPE",
        "--output",
        "--set",
        "--accelerator",
        "--devices",
        "--resume",
        "--check",
    ):
        assert option in text
    assert "never overwritten" in text and "docs/recipes.md" in text


def test_top_level_help_lists_train(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train" in capsys.readouterr().out


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_tiny_recipe(tmp_path)


def _bad_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a torch file")
    return f"stages.1.graft={{checkpoint: {path}, format: mae}}"


@pytest.mark.parametrize(
    ("make_override", "expected"),
    [
        (lambda p: "stages.1.epochz=3", "stages[1].epochz: unknown key"),
        (lambda p: "seed=abc", "seed: expected an integer, got 'abc'"),
        (lambda p: "stages.0.batch_size=0", "stages[0].batch_size: got 0"),
        (lambda p: f"data.path={p / 'missing'}", "data.path: '"),
        (
            lambda p: f"stages.1.graft={{checkpoint: {p / 'none.pth'}, format: mae}}",
            "stages[1].graft.checkpoint: '",
        ),
        (_bad_checkpoint, "stages[1].graft.checkpoint"),
        (lambda p: "stages.1.method=grafted_mocco", "did you mean 'grafted_moco'"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "bad-value",
        "missing-data",
        "missing-ckpt",
        "unreadable-ckpt",
        "unknown-method",
    ],
)
def test_train_bad_input__exit_2_one_line_no_traceback(
    tiny_recipe: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_override,  # type: ignore[no-untyped-def]
    expected: str,
) -> None:
    override = make_override(tmp_path)
    code, out, err = _run(
        [
            "train",
            str(tiny_recipe),
            "--set",
            override,
            "--output",
            str(tmp_path / "run"),
        ],
        capsys,
    )
    assert code == 2
    assert err.startswith("lightly-graft train: error: ")
    assert expected in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nothing written before the checks


def test_train_missing_recipe_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["train", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "is missing" in err


def test_train_check_prints_resolved_recipe(
    tiny_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        [
            "train",
            str(tiny_recipe),
            "--check",
            "--devices",
            "2",
            "--output",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0
    assert "image_size: 16" in out and "devices: 2" in out
    assert "global_batch_size: 8" in out  # 4 per device x 2 devices
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_train_end_to_end_through_main(
    tiny_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, out, _ = _run(["train", str(tiny_recipe), "--output", str(run)], capsys)
    assert code == 0
    assert f"report: {run / 'report.md'}" in out
    assert (run / "backbone.pt").is_file() and (run / "cl" / "last.ckpt").is_file()
    # A second run into the same folder is refused, nothing is touched.
    mtime = (run / "backbone.pt").stat().st_mtime
    code, _, err = _run(["train", str(tiny_recipe), "--output", str(run)], capsys)
    assert code == 2 and "already exists" in err and "--resume" in err
    assert (run / "backbone.pt").stat().st_mtime == mtime


class _InterruptAt(pl.Callback):
    """Presses Ctrl-C (raises KeyboardInterrupt) in the second stage."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        if type(pl_module).__name__ == "GraftedMoCo" and trainer.global_step == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_train_ctrl_c_leaves_checkpoint_and_resume_finishes(
    tiny_recipe: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightly_graft.run import stage

    original = stage.callbacks
    monkeypatch.setattr(stage, "callbacks", lambda *a: [*original(*a), _InterruptAt()])
    run = tmp_path / "run"
    code, _, err = _run(["train", str(tiny_recipe), "--output", str(run)], capsys)
    assert code == 130
    assert "--resume" in err
    assert (run / "cl" / "on_exception.ckpt").is_file()
    assert (run / "mim" / "done.json").is_file() and not (
        run / "cl" / "done.json"
    ).exists()
    monkeypatch.setattr(stage, "callbacks", original)
    code, out, _ = _run(
        ["train", str(tiny_recipe), "--output", str(run), "--resume"], capsys
    )
    assert code == 0
    assert "stage 'mim': finished earlier, skipped" in out
    assert (run / "cl" / "done.json").is_file() and (run / "report.md").is_file()


@pytest.mark.slow
def test_python_m_lightly_graft_train_subprocess(
    tiny_recipe: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightly_graft",
            "train",
            str(tiny_recipe),
            "--output",
            str(run),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "report.md").is_file() and (run / "backbone.pt").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightly_graft",
            "train",
            str(tiny_recipe),
            "--set",
            "seed=x",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.distributed
def test_train_ddp_two_cpu_processes(tiny_recipe: Path, tmp_path: Path) -> None:
    """Lightning re-runs the command in rank 1; both ranks run both stages, rank 0
    alone writes the run folder, and step ii still starts from step i."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightly_graft",
            "train",
            str(tiny_recipe),
            "--output",
            str(run),
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--set",
            "strategy=ddp",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("report: ") == 1
    assert (run / "cl" / "done.json").is_file() and (run / "backbone.pt").is_file()
    assert "global_batch_size: 8" in (run / "recipe.yaml").read_text()  # 4 x 2 ranks

    import torch

    from lightly_graft.training.checkpoints import load_encoder_state

    step_i, _, _ = load_encoder_state(run / "mim" / "encoder.pt", "lightly_graft")
    state = torch.load(run / "cl" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(
        state["backbone.vit.blocks.0.attn.qkv.weight"],
        step_i["blocks.0.attn.qkv.weight"],
        rtol=0,
        atol=0,
    )
