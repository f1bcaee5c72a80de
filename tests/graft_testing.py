"""Shared test helpers: tiny ViTs and methods that run in milliseconds on a CPU.

Import them with ``from graft_testing import ...`` (``tests/`` is on pytest's
``pythonpath``); ``conftest.py`` only holds fixtures, since several conftest files
exist and ``from conftest import`` would be ambiguous.
"""

from __future__ import annotations

import torch

#: A 32 px ViT with 16 patches of 8 px, width 32, 3 blocks (one per stage).
TINY_BACKBONE = {
    "name": "vit_tiny_patch16_224",
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
}

#: Small heads for every zoo entry (name -> constructor keyword arguments).
TINY_METHOD_ARGS: dict[str, dict] = {
    "mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2},
    "grafted_moco": {"projection_hidden_dim": 64, "projection_dim": 16},
    "grafted_vicreg": {"expander_hidden_dim": 64, "expander_dim": 64},
    "masked_moco": {"projection_hidden_dim": 64, "projection_dim": 16, "num_chunks": 4},
    "masked_byol": {"projection_hidden_dim": 64, "projection_dim": 16, "num_chunks": 4},
    "ccmim": {
        "decoder_dim": 16,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
        "projection_hidden_dim": 64,
        "projection_dim": 16,
    },
    "mtl": {
        "decoder_dim": 16,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
        "projection_hidden_dim": 64,
        "projection_dim": 16,
    },
}


def tiny_method(name: str, num_classes: int = 4, batch_size: int = 8, **overrides):
    """Builds the zoo entry ``name`` with the tiny backbone and heads."""
    from lightly_graft import zoo

    if name not in TINY_METHOD_ARGS:
        raise KeyError(
            f"Add tiny constructor arguments for '{name}' to TINY_METHOD_ARGS."
        )
    kwargs = {**TINY_METHOD_ARGS[name], **overrides}
    kwargs.setdefault("backbone", dict(TINY_BACKBONE))
    return zoo.get(name).cls(
        batch_size_per_device=batch_size, num_classes=num_classes, **kwargs
    )


def tiny_views(
    num_views: int = 2, batch_size: int = 8, seed: int = 0
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch_size, 3, 32, 32, generator=generator)
        for _ in range(num_views)
    ]


class RandomViews(torch.utils.data.Dataset):
    """``(views, label)`` items of seeded random 32 px images."""

    def __init__(
        self, num_views: int = 2, size: int = 16, num_classes: int = 4, seed: int = 0
    ):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, num_views, 3, 32, 32, generator=generator)
        self.labels = torch.arange(size) % num_classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return list(self.images[index]), int(self.labels[index])


def tiny_trainer(max_steps: int = 2, callbacks=(), **kwargs):
    import pytorch_lightning as pl

    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=kwargs.pop("logger", False),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        **kwargs,
    )


def fit_tiny(
    method,
    num_views: int = 2,
    max_steps: int = 2,
    callbacks=(),
    batch_size: int = 8,
    **kwargs,
):
    """Fits ``method`` for ``max_steps`` steps on random views; returns the trainer."""
    loader = torch.utils.data.DataLoader(
        RandomViews(num_views), batch_size=batch_size, shuffle=False
    )
    trainer = tiny_trainer(max_steps=max_steps, callbacks=callbacks, **kwargs)
    trainer.fit(method, train_dataloaders=loader)
    return trainer
