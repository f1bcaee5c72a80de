"""``lightly-graft analyze`` and ``run_analysis`` on a tiny checkpoint and a tiny
ImageFolder written by the tests."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from lightly.transforms.multi_view_transform import MultiViewTransform
from PIL import Image
from torch import Tensor, nn

from lightly_graft.analysis.mtl_loader import (
    FRESH_HEADS,
    HEADS_FROM_CHECKPOINT,
    mtl_for_checkpoint,
)
from lightly_graft.analysis.run import run_analysis
from lightly_graft.cli import main
from lightly_graft.methods.base import LossOutput, SSLMethod
from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.training.checkpoints import export_timm, save_backbone

BACKBONE = {
    "name": "vit_tiny_patch16_224",
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
}
DEPTH = 3


class ToyMTL(SSLMethod):
    """A tiny MIM + CL method with ``loss_terms`` (stands in for the zoo's ``mtl``)."""

    num_views = 3

    def __init__(
        self,
        *,
        batch_size_per_device: int,
        num_classes: int = 0,
        backbone: Any = "vit_tiny_patch16_224",
        optimizer: Any = None,
        hidden_dim: int = 16,
    ) -> None:
        super().__init__(
            batch_size_per_device=batch_size_per_device,
            num_classes=num_classes,
            backbone=backbone,
            optimizer=optimizer,
        )
        patch = self.backbone.vit.patch_embed.patch_size[0]
        self.decoder = nn.Linear(self.embed_dim, patch * patch * 3)
        self.projector = nn.Sequential(
            nn.Linear(self.embed_dim, hidden_dim), nn.BatchNorm1d(hidden_dim)
        )
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.store_hparams()

    def encoders(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "backbone_momentum": self.backbone_momentum}

    def loss_terms(self, views: list[Tensor]) -> dict[str, Tensor]:
        patch = self.backbone.vit.patch_embed.patch_size[0]
        tokens = self.backbone.encode(views[2])[:, 1:]
        target = nn.functional.unfold(views[2], patch, stride=patch).transpose(1, 2)
        mim = (self.decoder(tokens) - target).pow(2).mean()
        z0 = self.projector(self.backbone(views[0]))
        z1 = self.projector(self.backbone_momentum(views[1])).detach()
        cl = -nn.functional.cosine_similarity(z0, z1).mean()
        return {"mim": mim, "cl": cl}

    def training_loss(self, views: list[Tensor]) -> LossOutput:
        terms = self.loss_terms(views)
        return LossOutput(loss=terms["mim"] + terms["cl"])


def make_transform(
    input_size: int = 224, normalize: dict[str, list[float]] | None = None
) -> MultiViewTransform:
    view = T.Compose(
        [
            T.RandomResizedCrop(input_size, scale=(0.5, 1.0)),
            T.ToTensor(),
            T.Normalize(**(normalize or {"mean": [0.5] * 3, "std": [0.5] * 3})),
        ]
    )
    return MultiViewTransform([view, view, view])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes, 8 train + 4 val random 20 px PNGs each."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for cls in ("ant", "bee", "cat"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run's backbone.pt (timm + backbone.json) and a lightly_graft file."""
    root = tmp_path_factory.mktemp("ckpt")
    spec = BackboneSpec.coerce(dict(BACKBONE))
    torch.manual_seed(0)
    timm_path = export_timm(root / "run_a" / "backbone.pt", build_vit(spec), spec)
    torch.manual_seed(1)
    own = save_backbone(root / "grafted.pt", build_vit(spec), spec)
    return {"timm": timm_path, "lightly_graft": own}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _analyze(
    kind: str, checkpoints: dict[str, Path], data: Path, out: Path, *extra: str
) -> int:
    return main(
        [
            "analyze",
            "--kind",
            kind,
            "--checkpoint",
            str(checkpoints["timm"]),
            "--data",
            str(data),
            "--output",
            str(out),
            "--num-batches",
            "2",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    ("kind", "stem"),
    [("vic", "vic"), ("attention-distance", "attention_distance")],
)
def test_analyze__writes_png_and_csv_per_block(
    kind: str,
    stem: str,
    checkpoints: dict[str, Path],
    image_folder: Path,
    tmp_path: Path,
) -> None:
    assert _analyze(kind, checkpoints, image_folder, tmp_path) == 0
    _assert_png(tmp_path / f"{stem}.png")
    rows = _rows(tmp_path / f"{stem}.csv")
    assert [int(r["block"]) for r in rows] == list(range(DEPTH))
    assert {r["label"] for r in rows} == {"run_a"}  # the run directory's name


def test_analyze__definition_flags_reach_the_measurements(
    checkpoints: dict[str, Path], image_folder: Path, tmp_path: Path
) -> None:
    runs = {}
    for name, kind, stem, extra in [
        ("paper", "vic", "vic", ()),
        ("per_entry", "vic", "vic", ("--vic-definition", "per_entry")),
        ("kept", "attention-distance", "attention_distance", ()),
        (
            "renormalized",
            "attention-distance",
            "attention_distance",
            ("--renormalize-attention",),
        ),
    ]:
        out = tmp_path / name
        assert _analyze(kind, checkpoints, image_folder, out, *extra) == 0
        runs[name] = _rows(out / f"{stem}.csv")
    assert {r["definition"] for r in runs["per_entry"]} == {"per_entry"}
    for paper, per_entry in zip(runs["paper"], runs["per_entry"], strict=True):
        assert paper["definition"] == "paper"
        assert paper["invariance"] == per_entry["invariance"]
        assert float(paper["covariance"]) > float(per_entry["covariance"])
    for kept, renormalized in zip(runs["kept"], runs["renormalized"], strict=True):
        assert float(kept["mean_distance_px"]) < float(renormalized["mean_distance_px"])


def test_analyze_tsne__one_row_per_sample(
    checkpoints: dict[str, Path], image_folder: Path, tmp_path: Path
) -> None:
    assert _analyze("tsne", checkpoints, image_folder, tmp_path) == 0
    _assert_png(tmp_path / "tsne.png")
    rows = _rows(tmp_path / "tsne.csv")
    assert len(rows) == 8  # 2 batches of 4 of the 12 held-out images
    assert {r["class"] for r in rows} <= {"ant", "bee", "cat"}
    assert [int(r["sample"]) for r in rows] == list(range(8))


def test_run_analysis__several_checkpoints_on_one_figure(
    checkpoints: dict[str, Path], image_folder: Path, tmp_path: Path
) -> None:
    paths = run_analysis(
        "vic",
        [checkpoints["timm"], checkpoints["lightly_graft"]],
        image_folder,
        tmp_path,
        formats=["timm", "lightly_graft"],
        labels=["MAE", "Graft"],
        num_batches=1,
        batch_size=6,
        device="cpu",
    )
    assert [p.name for p in paths] == ["vic.png", "vic.csv"]
    rows = _rows(tmp_path / "vic.csv")
    assert [(r["label"], int(r["block"])) for r in rows] == [
        (label, block) for label in ("MAE", "Graft") for block in range(DEPTH)
    ]


def test_run_analysis_gradient_conflict__fresh_heads_around_backbone(
    checkpoints: dict[str, Path], image_folder: Path, tmp_path: Path
) -> None:
    paths = run_analysis(
        "gradient-conflict",
        [checkpoints["timm"]],
        image_folder,
        tmp_path,
        num_batches=3,
        batch_size=4,
        method=ToyMTL,
        device="cpu",
    )
    assert [p.name for p in paths] == [
        "gradient_conflict.png",
        "gradient_conflict.csv",
        "gradient_conflict_values.csv",
    ]
    _assert_png(paths[0])
    rows = _rows(paths[1])
    assert [int(r["block"]) for r in rows] == list(range(DEPTH))
    assert all(r["heads"] == FRESH_HEADS and int(r["count"]) == 3 for r in rows)
    assert all(-1 <= float(r["median"]) <= 1 for r in rows)
    assert len(_rows(paths[2])) == 3 * DEPTH


def test_run_analysis__same_views_whatever_the_checkpoint_order(
    checkpoints: dict[str, Path], image_folder: Path, tmp_path: Path
) -> None:
    def vic_rows(paths: list[Path], out: Path) -> list[dict[str, str]]:
        run_analysis(
            "vic",
            paths,
            image_folder,
            out,
            formats=[
                {"backbone.pt": "timm"}.get(p.name, "lightly_graft") for p in paths
            ],
            num_batches=2,
            batch_size=3,
            device="cpu",
        )
        return _rows(out / "vic.csv")

    both = vic_rows([checkpoints["timm"], checkpoints["lightly_graft"]], tmp_path / "a")
    alone = vic_rows([checkpoints["lightly_graft"]], tmp_path / "b")
    assert alone == [r for r in both if r["label"] == "grafted"]
    assert vic_rows([checkpoints["lightly_graft"]], tmp_path / "c") == alone


def _lightning_checkpoint(path: Path, module: SSLMethod) -> Path:
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2.6.6",
        },
        path,
    )
    return path


def test_mtl_for_checkpoint__lightning_checkpoint_keeps_its_heads(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    trained = ToyMTL(batch_size_per_device=4, backbone=dict(BACKBONE))
    path = _lightning_checkpoint(tmp_path / "mtl.ckpt", trained)
    from lightly_graft.training.checkpoints import load_backbone

    vit, spec = load_backbone(path, "lightning")
    model = mtl_for_checkpoint(path, "lightning", vit, spec, method=ToyMTL)
    assert model.heads == HEADS_FROM_CHECKPOINT
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(model.module.state_dict()[name], value, msg=name)


def test_mtl_for_checkpoint__other_checkpoint_gets_fresh_heads(
    checkpoints: dict[str, Path],
) -> None:
    from lightly_graft.training.checkpoints import load_backbone

    vit, spec = load_backbone(checkpoints["timm"], "timm")
    model = mtl_for_checkpoint(checkpoints["timm"], "timm", vit, spec, method=ToyMTL)
    assert model.heads == FRESH_HEADS
    for encoder in (model.module.backbone, model.module.backbone_momentum):
        for name, value in vit.state_dict().items():
            torch.testing.assert_close(encoder.vit.state_dict()[name], value)


def test_analyze__user_errors_exit_2(
    checkpoints: dict[str, Path], image_folder: Path, tmp_path: Path, capsys: Any
) -> None:
    missing = main(
        ["analyze", "--kind", "vic", "--checkpoint", str(tmp_path / "nope.pt")]
        + ["--data", str(image_folder), "--output", str(tmp_path)]
    )
    assert missing == 2
    assert "nope.pt" in capsys.readouterr().err
    wrong_format = main(
        ["analyze", "--kind", "vic", "--checkpoint", str(checkpoints["timm"])]
        + ["--format", "lightly_graft", "--data", str(image_folder)]
        + ["--output", str(tmp_path)]
    )
    assert wrong_format == 2
    labels = main(
        ["analyze", "--kind", "vic", "--checkpoint", str(checkpoints["timm"])]
        + ["--label", "a", "--label", "b", "--data", str(image_folder)]
        + ["--output", str(tmp_path)]
    )
    assert labels == 2
    assert "2 labels for 1 checkpoints" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_gradient_conflict__mtl_lightning_checkpoint_keeps_heads(
    image_folder: Path, tmp_path: Path
) -> None:
    from graft_testing import fit_tiny, tiny_method

    torch.manual_seed(0)
    trainer = fit_tiny(tiny_method("mtl", num_classes=0), num_views=3, max_steps=1)
    checkpoint = tmp_path / "mtl.ckpt"
    trainer.save_checkpoint(checkpoint)
    code = main(
        ["analyze", "--kind", "gradient-conflict", "--checkpoint", str(checkpoint)]
        + ["--format", "lightning", "--data", str(image_folder)]
        + ["--output", str(tmp_path / "out"), "--num-batches", "2"]
        + ["--batch-size", "4", "--device", "cpu"]
    )
    assert code == 0
    _assert_png(tmp_path / "out" / "gradient_conflict.png")
    rows = _rows(tmp_path / "out" / "gradient_conflict.csv")
    assert [int(r["block"]) for r in rows] == [0, 1, 2]  # the tiny backbone's depth
    assert all(r["heads"] == HEADS_FROM_CHECKPOINT for r in rows)
    assert all(int(r["count"]) == 2 for r in rows)
