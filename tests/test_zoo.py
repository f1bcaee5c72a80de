from __future__ import annotations

import importlib

import pytest
import torch
from graft_testing import fit_tiny, tiny_method, tiny_views

from lightly_graft import zoo
from lightly_graft.cli import main
from lightly_graft.errors import GraftError


@pytest.mark.parametrize("name", zoo.names())
def test_zoo__forward_finite_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    method = tiny_method(name)
    method.train()
    out = method.training_loss(tiny_views(method.num_views))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.features is not None and out.features.shape == (8, method.embed_dim)
    targets = torch.arange(8) % 4
    cls_loss, _ = method.online_classifier.training_step(
        (out.features.detach(), targets), 0
    )
    (out.loss + cls_loss).backward()
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@pytest.mark.parametrize("name", zoo.names())
def test_zoo__fits_two_steps_with_validation(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    method = tiny_method(name)
    val = torch.utils.data.DataLoader(
        [(torch.randn(3, 32, 32), i % 4) for i in range(8)], batch_size=4
    )
    trainer = fit_tiny(method, num_views=method.num_views, max_steps=2)
    assert trainer.global_step == 2
    result = trainer.validate(method, dataloaders=val, verbose=False)
    assert "val_online_cls_top1" in result[0]
    # The checkpoint rebuilds the method from its saved constructor arguments
    # and loads with weights_only=True (no pickled objects in it).
    trainer.save_checkpoint(tmp_path / "method.ckpt")
    restored = type(method).load_from_checkpoint(
        tmp_path / "method.ckpt", weights_only=True
    )
    for (key, value), other in zip(
        method.state_dict().items(), restored.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(value, other, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", zoo.names())
def test_zoo__lightly_benchmark_contract(name: str) -> None:
    entry = zoo.get(name)
    module = importlib.import_module(entry.cls.__module__)
    assert hasattr(module, "transform"), (
        "lightly's METHODS dict needs a module-level transform"
    )
    assert entry.transform is module.transform
    fields = entry.config_cls.__dataclass_fields__
    assert {"batch_size_per_device", "num_classes", "backbone", "optimizer"} <= set(
        fields
    )
    method = tiny_method(name, num_classes=7, batch_size=3)
    assert (
        method.batch_size_per_device == 3 and method.online_classifier.num_classes == 7
    )
    assert method.hparams["backbone"]["name"] == "vit_tiny_patch16_224"


@pytest.mark.parametrize("name", zoo.names())
def test_zoo__batched_transform_gives_the_methods_views(name: str) -> None:
    """Per-image and batched transforms of an entry: as many views, same shape,
    and the batched views train the method (one loss, finite)."""
    from PIL import Image

    entry = zoo.get(name)
    per_image = entry.transform_factory(input_size=32)(Image.new("RGB", (40, 36)))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    views = entry.batched_transform_factory(input_size=32)(images)
    assert len(views) == len(per_image) == entry.cls.num_views
    assert all(v.shape == (4, *p.shape) for v, p in zip(views, per_image, strict=True))
    loss = tiny_method(name, num_classes=0, batch_size=4).training_loss(views).loss
    assert torch.isfinite(loss)


def test_zoo__unknown_name_lists_names() -> None:
    with pytest.raises(
        GraftError,
        match=r"Unknown method 'grafted_moc'.*did you mean 'grafted_moco'.*'mae'",
    ):
        zoo.get("grafted_moc")


def test_zoo__duplicate_name_is_rejected() -> None:
    entry = zoo.get("mae")
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(
            "mae",
            entry.cls,
            transform_factory=entry.transform_factory,
            transform=entry.transform,
            batched_transform_factory=entry.batched_transform_factory,
            description="x",
        )


def test_zoo__config_dataclass_mirrors_constructor() -> None:
    config = zoo.get("grafted_moco").config_cls(batch_size_per_device=8, num_classes=10)
    assert config.temperature == 0.2 and config.momentum_start == 0.99
    assert config.projection_hidden_dim == 4096 and config.projection_dim == 256
    with pytest.raises(TypeError):
        zoo.get("grafted_moco").config_cls(
            batch_size_per_device=8, num_classes=10, temprature=0.1
        )


def test_cli_zoo__lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in zoo.names():
        assert name in out
    assert "recipe:" in out
