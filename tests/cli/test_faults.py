"""Faults and bad inputs across ``train``, ``eval``, ``analyze`` and ``bench``.

Every case must end with exit code 2 and one line on stderr that names the
problem and the fix, with no traceback, and must leave every file that existed
before exactly as it was. Most cases are in-process ``main([...])`` calls that
fail before any training; the few that train use the tiny pipeline recipe for
a step or two.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from graft_testing import TINY_BACKBONE

from lightly_graft.cli import main
from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.run.lock import DirectoryLock
from lightly_graft.training.checkpoints import export_timm
from tests.recipes.pipeline_fixtures import write_image_folder, write_tiny_recipe

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "recipes" / "suites" / "smoke.yaml"
#: The backbone of the tiny pipeline recipe.
RECIPE_BACKBONE = {
    "name": "vit_tiny_patch16_224",
    "img_size": 16,
    "patch_size": 8,
    "embed_dim": 24,
    "depth": 3,
    "num_heads": 2,
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny recipe with its images, a finished run of it, a backbone.pt."""
    root = tmp_path_factory.mktemp("assets")
    recipe = write_tiny_recipe(root)
    assert main(["train", str(recipe), "--output", str(root / "run")]) == 0
    spec = BackboneSpec.coerce(dict(TINY_BACKBONE))
    torch.manual_seed(0)
    export_timm(root / "model" / "backbone.pt", build_vit(spec), spec)
    return root


@dataclass
class Env:
    """One case's folder: copies of the assets, made on demand."""

    root: Path
    assets: Path

    @property
    def recipe(self) -> Path:
        path = self.root / "tiny.yaml"
        if not path.exists():
            text = (self.assets / "tiny.yaml").read_text()
            path.write_text(text.replace(str(self.assets), str(self.root)))
            shutil.copytree(self.assets / "images", self.root / "images")
        return path

    @property
    def images(self) -> Path:
        self.recipe  # noqa: B018 (copies the images)
        return self.root / "images"

    @property
    def run(self) -> Path:
        """A copy of the finished run of the recipe."""
        path = self.root / "run"
        if not path.exists():
            self.recipe  # noqa: B018
            shutil.copytree(self.assets / "run", path)
        return path

    @property
    def backbone(self) -> Path:
        path = self.root / "model" / "backbone.pt"
        if not path.exists():
            shutil.copytree(self.assets / "model", self.root / "model")
        return path

    def file(self, name: str, content: bytes | str = b"x") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def train(self, *extra: str, output: Path | None = None) -> list[str]:
        out = output if output is not None else self.root / "out"
        # The copied run was made with the assets' recipe (its data path).
        recipe = self.assets / "tiny.yaml" if out == self.root / "run" else self.recipe
        return ["train", str(recipe), "--output", str(out), *extra]

    def eval(self, *extra: str, checkpoint: Path | None = None) -> list[str]:
        ckpt = checkpoint if checkpoint is not None else self.backbone
        argv = ["eval", str(ckpt), "--protocol", "knn", "--device", "cpu"]
        if "--data" not in extra:
            argv += ["--data", str(self.images)]
        if "--output" not in extra:
            argv += ["--output", str(self.root / "eval")]
        return [*argv, *extra]

    def analyze(self, *extra: str, checkpoint: Path | None = None) -> list[str]:
        ckpt = checkpoint if checkpoint is not None else self.backbone
        argv = ["analyze", "--kind", "vic", "--checkpoint", str(ckpt)]
        argv += ["--format", "timm", "--device", "cpu", "--num-batches", "1"]
        if "--data" not in extra:
            argv += ["--data", str(self.images)]
        if "--output" not in extra:
            argv += ["--output", str(self.root / "analysis")]
        return [*argv, *extra]

    def bench(self, *extra: str, suite: Path = SUITE) -> list[str]:
        if "--output" not in extra:
            extra = (*extra, "--output", str(self.root / "bench"))
        return ["bench", str(suite), *extra]


def _unfinished(env: Env, stage: str = "cl") -> Path:
    """The run with ``stage`` as if interrupted: no done.json, no encoder."""
    (env.run / stage / "done.json").unlink()
    (env.run / stage / "encoder.pt").unlink()
    for name in ("backbone.pt", "backbone.json", "report.md"):
        (env.run / name).unlink(missing_ok=True)
    return env.run


def _truncate(path: Path, size: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])
    return path


def _bad_recipe(env: Env, old: str, new: str) -> Path:
    text = env.recipe.read_text()
    assert old in text, old
    return env.file("bad.yaml", text.replace(old, new, 1))


def _one_class(env: Env) -> Path:
    root = env.root / "one_class"
    write_image_folder(root, classes=1)
    return root


def _corrupt_images(env: Env) -> Path:
    """Half the training images of the recipe's folder are not images."""
    for path in sorted((env.images / "train").rglob("*.png"))[::2]:
        path.write_bytes(b"not a png")
    return env.recipe


def _nan_backbone(env: Env) -> Path:
    spec = BackboneSpec.coerce(dict(TINY_BACKBONE))
    vit = build_vit(spec)
    with torch.no_grad():
        vit.norm.weight.fill_(float("inf"))
    return export_timm(env.root / "nan" / "backbone.pt", vit, spec)


def _foreign_checkpoint(env: Env) -> Path:
    """A timm state dict of which no key fits the recipe's backbone."""
    path = env.root / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    return path


def _other_width_checkpoint(env: Env) -> Path:
    """A timm state dict of the right names but another width: nothing fits."""
    spec = BackboneSpec.coerce({**RECIPE_BACKBONE, "embed_dim": 16})
    path = env.root / "narrow.pt"
    torch.save(build_vit(spec).state_dict(), path)
    return path


def _graft(env: Env, checkpoint: Path, partial: bool) -> list[str]:
    value = f"{{checkpoint: {checkpoint}, format: timm, allow_partial: {str(partial).lower()}}}"
    return env.train("--set", f"stages.1.graft={value}")


def _hold(env: Env, path: Path, what: str = "run directory") -> Path:
    """Holds ``path``'s lock from this process (another open file: refused)."""
    env.held = DirectoryLock(path, what).acquire()  # type: ignore[attr-defined]
    return path


# (id, argv builder, words the one line must contain)
Case = tuple[str, Callable[[Env], list[str]], tuple[str, ...]]
CASES: list[Case] = [
    # -- train: the recipe -------------------------------------------------
    (
        "train-recipe-missing",
        lambda e: ["train", str(e.root / "no.yaml")],
        ("no.yaml", "missing"),
    ),
    ("train-recipe-is-dir", lambda e: ["train", str(e.root)], ("directory",)),
    ("train-recipe-empty", lambda e: ["train", str(e.file("e.yaml", ""))], ("e.yaml",)),
    (
        "train-recipe-bad-yaml",
        lambda e: ["train", str(e.file("b.yaml", "a: [1,\n"))],
        ("b.yaml",),
    ),
    (
        "train-recipe-list",
        lambda e: ["train", str(e.file("l.yaml", "- 1\n"))],
        ("mapping",),
    ),
    (
        "train-unknown-key",
        lambda e: ["train", str(_bad_recipe(e, "seed: 3", "seed: 3\nsede: 4"))],
        ("sede",),
    ),
    (
        "train-unknown-stage-key",
        lambda e: ["train", str(_bad_recipe(e, "    epochs: 2", "    epoch: 2"))],
        ("epoch",),
    ),
    (
        "train-wrong-type",
        lambda e: e.train("--set", "stages.0.epochs=two"),
        ("epochs",),
    ),
    (
        "train-negative-epochs",
        lambda e: e.train("--set", "stages.0.epochs=-1"),
        ("epochs",),
    ),
    (
        "train-unknown-method",
        lambda e: e.train("--set", "stages.0.method=mea"),
        ("mae",),
    ),
    ("train-set-no-equals", lambda e: e.train("--set", "seed"), ("KEY=VALUE",)),
    ("train-set-unknown-key", lambda e: e.train("--set", "nope=1"), ("nope",)),
    ("train-set-bad-index", lambda e: e.train("--set", "stages.9.epochs=1"), ("9",)),
    (
        "train-set-unknown-stage",
        lambda e: e.train("--set", "stages.mimm.epochs=1"),
        ("mimm",),
    ),
    (
        "train-bad-method-arg",
        lambda e: e.train("--set", "stages.0.method_args.decoder_dimm=3"),
        ("decoder_dimm",),
    ),
    (
        "train-bad-lr",
        lambda e: e.train("--set", "stages.0.optimizer.base_lr=-1"),
        ("base_lr",),
    ),
    (
        "train-bad-backbone",
        lambda e: e.train("--set", "backbone.name=vit_nope"),
        ("vit_nope",),
    ),
    # -- train: the data ---------------------------------------------------
    (
        "train-data-missing",
        lambda e: e.train("--set", f"data.path={e.root / 'nodata'}"),
        ("nodata", "does not exist"),
    ),
    (
        "train-data-is-file",
        lambda e: e.train("--set", f"data.path={e.file('d.txt')}"),
        ("is a file",),
    ),
    (
        "train-data-no-classes",
        lambda e: e.train("--set", f"data.path={e.file('empty/x.txt').parent}"),
        ("no class folders",),
    ),
    (
        "train-data-one-class",
        lambda e: e.train(
            "--set", f"data.path={_one_class(e)}", "--set", "random_init_knn=true"
        ),
        ("one class", "kNN"),
    ),
    (
        "train-corrupt-image",
        lambda e: (_corrupt_images(e), e.train())[1],
        ("cannot be read", ".png", "skip_unreadable"),
    ),
    # -- train: graft checkpoints --------------------------------------------
    (
        "train-graft-missing",
        lambda e: e.train(
            "--set", f"stages.1.graft={{checkpoint: {e.root / 'no.pt'}, format: timm}}"
        ),
        ("no.pt", "does not exist"),
    ),
    (
        "train-graft-empty",
        lambda e: e.train(
            "--set",
            f"stages.1.graft={{checkpoint: {e.file('g.pt', b'')}, format: timm}}",
        ),
        ("empty",),
    ),
    (
        "train-graft-garbage",
        lambda e: e.train(
            "--set",
            f"stages.1.graft={{checkpoint: {e.file('g.pt', b'junk' * 9)}, format: timm}}",
        ),
        ("g.pt", "cannot be read"),
    ),
    (
        "train-graft-bad-format",
        lambda e: e.train(
            "--set", f"stages.1.graft={{checkpoint: {e.backbone}, format: timmm}}"
        ),
        ("timmm",),
    ),
    (
        "train-graft-nothing-fits-partial",
        lambda e: _graft(e, _foreign_checkpoint(e), True),
        ("nothing of", "architecture"),
    ),
    (
        "train-graft-wrong-width-partial",
        lambda e: _graft(e, _other_width_checkpoint(e), True),
        ("nothing of",),
    ),
    (
        "train-graft-nothing-fits",
        lambda e: _graft(e, _foreign_checkpoint(e), False),
        ("nothing of",),
    ),
    (
        "train-graft-nan",
        lambda e: e.train(
            "--set", f"stages.1.graft={{checkpoint: {_nan_backbone(e)}, format: timm}}"
        ),
        ("non-finite",),
    ),
    # -- train: the machine --------------------------------------------------
    (
        "train-gpu-missing",
        lambda e: e.train("--accelerator", "gpu"),
        ("no CUDA GPU", "--accelerator cpu"),
    ),
    (
        "train-cuda-missing",
        lambda e: e.train("--accelerator", "cuda"),
        ("no CUDA GPU",),
    ),
    (
        "train-too-many-devices",
        lambda e: e.train("--devices", "64"),
        ("64", "--devices 1"),
    ),
    # -- train: the run directory --------------------------------------------
    (
        "train-output-is-file",
        lambda e: e.train(output=e.file("out.txt")),
        ("is a file", "--output"),
    ),
    (
        "train-output-parent-is-file",
        lambda e: e.train(output=e.file("p.txt") / "run"),
        ("is a file", "--output"),
    ),
    (
        "train-existing-run",
        lambda e: e.train(output=e.run),
        ("already exists", "--resume"),
    ),
    (
        "train-resume-other-recipe",
        lambda e: e.train("--resume", "--set", "stages.1.epochs=3", output=e.run),
        ("differs", "epochs"),
    ),
    (
        "train-resume-foreign-dir",
        lambda e: e.train("--resume", output=e.file("foreign/notes.txt").parent),
        ("not a lightly-graft run",),
    ),
    (
        "train-locked",
        lambda e: e.train(output=_hold(e, e.root / "out")),
        ("in use", f"PID {os.getpid()}"),
    ),
    (
        "train-resume-locked",
        lambda e: e.train("--resume", output=_hold(e, e.run)),
        ("in use", "PID"),
    ),
    (
        "train-resume-truncated-ckpt",
        lambda e: (
            _truncate(_unfinished(e) / "cl" / "last.ckpt"),
            e.train("--resume", output=e.run),
        )[1],
        ("last.ckpt", "unreadable", "delete"),
    ),
    (
        "train-resume-empty-ckpt",
        lambda e: (
            _truncate(_unfinished(e) / "cl" / "last.ckpt", 0),
            e.train("--resume", output=e.run),
        )[1],
        ("last.ckpt", "empty"),
    ),
    (
        "train-resume-empty-done-no-ckpt",
        lambda e: (
            (e.run / "cl" / "last.ckpt").unlink(),
            (e.run / "cl" / "done.json").write_text(""),
            e.train("--resume", output=e.run),
        )[2],
        ("done.json", "corrupt", "delete"),
    ),
    (
        "train-resume-bad-done-bad-ckpt",
        lambda e: (
            _truncate(e.run / "cl" / "done.json"),
            _truncate(e.run / "cl" / "last.ckpt"),
            e.train("--resume", output=e.run),
        )[2],
        ("last.ckpt", "unreadable"),
    ),
    (
        "train-diverges",
        lambda e: e.train("--set", "stages.0.optimizer.base_lr=1e36"),
        ("diverged", "learning rate"),
    ),
    (
        "train-check-bad",
        lambda e: e.train("--check", "--set", "stages.0.batch_size=0"),
        ("batch_size",),
    ),
    # -- eval ----------------------------------------------------------------
    ("eval-missing", lambda e: e.eval(checkpoint=e.root / "no.pt"), ("no.pt",)),
    (
        "eval-is-dir",
        lambda e: e.eval(checkpoint=e.root),
        ("is a directory, not a checkpoint file",),
    ),
    (
        "eval-empty",
        lambda e: e.eval(checkpoint=e.file("m/empty.pt", b"")),
        ("empty.pt", "is empty (0 bytes)"),
    ),
    (
        "eval-garbage",
        lambda e: e.eval(checkpoint=e.file("m/g.pt", b"junk" * 9)),
        ("g.pt", "cannot be read"),
    ),
    (
        "eval-wrong-format",
        lambda e: e.eval("--format", "lightly_graft"),
        ("lightly_graft",),
    ),
    (
        "eval-nan",
        lambda e: e.eval(checkpoint=_nan_backbone(e)),
        ("non-finite", "diverged"),
    ),
    (
        "eval-output-is-file",
        lambda e: e.eval("--output", str(e.file("o.txt"))),
        ("is a file", "--output"),
    ),
    (
        "eval-output-parent-file",
        lambda e: e.eval("--output", str(e.file("o.txt") / "x")),
        ("is a file",),
    ),
    (
        "eval-output-has-result",
        lambda e: e.eval("--output", str(e.file("done/metrics.json", "{}").parent)),
        ("exists", "--overwrite"),
    ),
    (
        "eval-data-missing",
        lambda e: e.eval("--data", str(e.root / "nodata")),
        ("nodata",),
    ),
    (
        "eval-data-one-class",
        lambda e: e.eval("--data", str(_one_class(e))),
        ("1 class", "at least 2"),
    ),
    (
        "eval-unknown-arch",
        lambda e: e.eval(checkpoint=_spec_less(e)),
        ("architecture", "--model"),
    ),
    (
        "eval-partial-needs-freeze",
        lambda e: [
            "eval",
            str(e.backbone),
            "--protocol",
            "partial",
            "--data",
            str(e.images),
            "--output",
            str(e.root / "ev"),
        ],
        ("--freeze-blocks",),
    ),
    ("eval-cuda-missing", lambda e: e.eval("--device", "cuda"), ("CUDA", "cpu")),
    ("eval-bad-device", lambda e: e.eval("--device", "tpu9"), ("not a device",)),
    # -- analyze -------------------------------------------------------------
    ("analyze-missing", lambda e: e.analyze(checkpoint=e.root / "no.pt"), ("no.pt",)),
    (
        "analyze-garbage",
        lambda e: e.analyze(checkpoint=e.file("m/g.pt", b"junk" * 9)),
        ("cannot be read",),
    ),
    ("analyze-nan", lambda e: e.analyze(checkpoint=_nan_backbone(e)), ("non-finite",)),
    (
        "analyze-output-is-file",
        lambda e: e.analyze("--output", str(e.file("a.txt"))),
        ("is a file", "--output"),
    ),
    (
        "analyze-output-parent-file",
        lambda e: e.analyze("--output", str(e.file("a.txt") / "x")),
        ("is a file",),
    ),
    (
        "analyze-data-missing",
        lambda e: e.analyze("--data", str(e.root / "nodata")),
        ("nodata",),
    ),
    ("analyze-cuda-missing", lambda e: e.analyze("--device", "cuda"), ("CUDA",)),
    # -- bench ---------------------------------------------------------------
    ("bench-suite-missing", lambda e: e.bench(suite=e.root / "no.yaml"), ("no.yaml",)),
    (
        "bench-suite-bad-yaml",
        lambda e: e.bench(suite=e.file("s.yaml", "a: [\n")),
        ("s.yaml",),
    ),
    (
        "bench-suite-unknown-key",
        lambda e: e.bench(suite=e.file("s.yaml", f"extends: {SUITE}\nnmae: x\n")),
        ("nmae",),
    ),
    (
        "bench-unknown-arm",
        lambda e: e.bench("--only", "mocco"),
        ("mocco", "did you mean"),
    ),
    (
        "bench-locked",
        lambda e: e.bench("--output", str(_hold(e, e.root / "b", "bench directory"))),
        ("bench directory", "in use", "PID"),
    ),
    (
        "bench-existing",
        lambda e: e.bench("--output", str(e.file("b/suite.yaml", "name: x\n").parent)),
        ("exists", "--resume"),
    ),
    (
        "bench-foreign-dir",
        lambda e: e.bench("--output", str(e.file("b/notes.txt").parent)),
        ("not a bench directory",),
    ),
    (
        "bench-output-is-file",
        lambda e: e.bench("--output", str(e.file("b.txt"))),
        ("is a file",),
    ),
]


def _spec_less(env: Env) -> Path:
    """A backbone.pt without backbone.json: its architecture is unknown."""
    target = env.root / "nospec" / "backbone.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(env.backbone, target)
    return target


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_fault_cases_are_many_and_distinct() -> None:
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "argv", "words"), CASES, ids=[c[0] for c in CASES])
def test_fault__exit_2_one_line_nothing_lost(
    name: str,
    argv: Callable[[Env], list[str]],
    words: tuple[str, ...],
    assets: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = Env(tmp_path, assets)
    args = argv(env)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(args)
    finally:
        held = getattr(env, "held", None)
        if held is not None:
            held.release()
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lightly-graft ")]
    assert len(lines) == 1, err[-2000:]
    for word in words:
        assert word in lines[0], lines[0]
    after = _snapshot(tmp_path)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"changed or lost: {changed}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_fault__output_not_writable(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Env(tmp_path, assets)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(env.train(output=locked / "run")) == 2
    finally:
        locked.chmod(0o755)
    assert "not writable" in capsys.readouterr().err


def test_fault__failed_precheck_leaves_nothing_that_blocks_a_retry(
    assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the run directory was claimed but before training wrote
    anything (here: building the first stage's data) removes what it wrote."""
    from lightly_graft.run import pipeline

    env = Env(tmp_path, assets)

    def broken(*args: object, **kwargs: object) -> None:
        from lightly_graft.errors import DataError

        raise DataError("broken on purpose")

    monkeypatch.setattr(pipeline, "build_datamodule", broken)
    assert main(env.train()) == 2
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert main(env.train("--check")) == 0


def test_fault__skip_unreadable_counts_and_finishes(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Env(tmp_path, assets)
    _corrupt_images(env)
    assert main(env.train("--set", "data.skip_unreadable=true")) == 0
    out = capsys.readouterr().out
    assert "unreadable images skipped" in out
    assert "unreadable images" in (tmp_path / "out" / "report.md").read_text()
    listed = (tmp_path / "out" / "mim" / "unreadable.txt").read_text().splitlines()
    assert listed and all(line.endswith(".png") for line in listed)


def test_fault__partial_graft_report_is_written(assets: Path, tmp_path: Path) -> None:
    env = Env(tmp_path, assets)
    spec = BackboneSpec.coerce(RECIPE_BACKBONE)
    state = build_vit(spec).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("blocks.0.")}
    path = tmp_path / "part.pt"
    torch.save(state, path)
    assert main(_graft(env, path, True)) == 0
    report = (tmp_path / "out" / "cl" / "graft_report.json").read_text()
    assert '"complete": false' in report and "blocks.0." in report


def test_fault__corrupt_image_names_file_with_workers(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Env(tmp_path, assets)
    _corrupt_images(env)
    assert main(env.train("--set", "data.num_workers=1")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lightly-graft ")]
    assert len(lines) == 1 and ".png" in lines[0] and "skip_unreadable" in lines[0]
    assert (tmp_path / "out" / "mim" / "on_exception.ckpt").is_file()
