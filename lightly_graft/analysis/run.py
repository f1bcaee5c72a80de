"""``run_analysis``: checkpoints + a data spec -> PNG figures and CSV numbers.

The entry point behind ``lightly-graft analyze`` and the training pipeline's
report. Each kind loads every checkpoint's backbone (explicitly named formats of
:mod:`lightly_graft.training.checkpoints`), draws a seeded subset of the data
(``"default"`` = embedded Fashion-MNIST, or an ImageFolder directory), measures,
and writes its files into ``output``:

- ``gradient-conflict`` (Fig. 1): per checkpoint, the MIM/CL gradient cosine per
  block over ``num_batches`` training batches (MTL views from the method's own
  transform). The two losses come from the ``mtl`` zoo method: a Lightning
  checkpoint of that method brings its own heads and decoder; any other
  checkpoint gets the method built around its backbone with freshly initialised
  heads and decoder, which the title and the CSV say.
- ``vic`` (Fig. 6): VIC statistics per block between two augmented views
  (the contrastive two-view transform) of held-out images.
- ``attention-distance`` (Fig. 7): mean attention distance per block and head on
  held-out images (deterministic resize + centre crop).
- ``tsne`` (Fig. 3): t-SNE of the pooled features of held-out images by class.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightly_graft.analysis.attention_distance import (
    measure_attention_distance,
    write_attention_distance,
)
from lightly_graft.analysis.gradient_conflict import (
    measure_gradient_conflict,
    write_gradient_conflict,
)
from lightly_graft.analysis.mtl_loader import mtl_for_checkpoint
from lightly_graft.analysis.tsne import embed, tsne, write_tsne
from lightly_graft.analysis.vic import measure_vic, write_vic
from lightly_graft.data import (
    augmentation_defaults,
    default_normalize,
    eval_transform,
    open_dataset,
    seeded_subset,
    two_view_transform,
)
from lightly_graft.errors import GraftError, did_you_mean, format_options
from lightly_graft.functional.attention import uniform_attention_distance
from lightly_graft.functional.gradients import block_parameters
from lightly_graft.functional.vic import VIC_DEFINITIONS
from lightly_graft.modules.backbone import BackboneSpec
from lightly_graft.training.checkpoints import check_format, load_backbone
from lightly_graft.training.devices import resolve_device

KINDS = ("gradient-conflict", "vic", "attention-distance", "tsne")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded backbone and where it came from."""

    label: str
    path: Path
    format: str
    vit: VisionTransformer
    spec: BackboneSpec

    @property
    def input_size(self) -> int:
        return int(self.vit.patch_embed.img_size[0])


def run_analysis(
    kind: str,
    checkpoints: Sequence[str | Path],
    data: str | Path,
    output: str | Path,
    *,
    formats: str | Sequence[str] = "timm",
    labels: Sequence[str] | None = None,
    num_batches: int = 8,
    batch_size: int = 64,
    method: str | type = "mtl",
    device: str | torch.device | None = None,
    num_workers: int = 0,
    seed: int = 0,
    vic_definition: str = "paper",
    renormalize_attention: bool = False,
) -> list[Path]:
    """Runs one analysis over one or more checkpoints and writes PNG + CSV files.

    Args:
        kind: One of ``KINDS``.
        checkpoints: Checkpoint files (a run's ``backbone.pt``, a Lightning
            ``.ckpt``, a ``lightly_graft`` or MAE file).
        data: ``"default"`` or an ImageFolder-style directory.
        output: Directory for the files (created).
        formats: The checkpoints' format (one for all, or one per checkpoint):
            ``lightly_graft``, ``lightning``, ``mae``, ``moco_v3`` or ``timm``.
        labels: A name per checkpoint for legends and file names; defaults to
            the file name (or the run directory for ``backbone.pt``).
        num_batches: Batches per checkpoint (t-SNE: num_batches * batch_size
            samples).
        batch_size: Images per batch.
        method: Zoo name (or class) of the method providing ``loss_terms``
            (gradient conflict only).
        device: ``"cpu"``, ``"cuda"``, ...; None = CUDA when available.
        num_workers: DataLoader workers.
        seed: Seeds the data subset, the augmentations and t-SNE.
        vic_definition: ``"paper"`` (the official code's, default) or
            ``"per_entry"`` (:func:`~lightly_graft.functional.vic.vic_statistics`).
        renormalize_attention: Rescale attention over patches to sum to 1 after
            dropping CLS (default: no, as the paper's code).

    Returns:
        The files written, PNGs first.

    Raises:
        GraftError: Unknown kind, mismatched labels/formats, unreadable checkpoint
            or data.
    """
    if kind not in KINDS:
        raise GraftError(
            f"Unknown analysis kind '{kind}'{did_you_mean(kind, KINDS)}; valid "
            f"kinds: {format_options(KINDS)}."
        )
    if vic_definition not in VIC_DEFINITIONS:
        raise GraftError(
            f"Unknown VIC definition '{vic_definition}'"
            f"{did_you_mean(vic_definition, VIC_DEFINITIONS)}; valid definitions: "
            f"{format_options(VIC_DEFINITIONS)}."
        )
    if num_batches < 1 or batch_size < 2:
        raise GraftError(
            f"Analysis needs num_batches >= 1 and batch_size >= 2, got "
            f"num_batches={num_batches}, batch_size={batch_size}."
        )
    loaded = load_checkpoints(checkpoints, formats, labels)
    device = resolve_device(device)
    settings = _Settings(data, num_batches, batch_size, device, num_workers, seed)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if kind == "gradient-conflict":
        return _gradient_conflict(loaded, settings, output, method)
    if kind == "vic":
        return _vic(loaded, settings, output, vic_definition)
    if kind == "attention-distance":
        return _attention_distance(loaded, settings, output, renormalize_attention)
    return _tsne(loaded, settings, output)


def load_checkpoints(
    paths: Sequence[str | Path],
    formats: str | Sequence[str],
    labels: Sequence[str] | None,
) -> list[Checkpoint]:
    """Loads every checkpoint's backbone; labels default to file/run names."""
    if not paths:
        raise GraftError("No checkpoint given: pass at least one --checkpoint.")
    formats = [formats] * len(paths) if isinstance(formats, str) else list(formats)
    if len(formats) == 1:
        formats = formats * len(paths)
    if len(formats) != len(paths):
        raise GraftError(
            f"Got {len(formats)} formats for {len(paths)} checkpoints: give one "
            f"--format for all of them or one per --checkpoint."
        )
    if labels is not None and len(labels) != len(paths):
        raise GraftError(
            f"Got {len(labels)} labels for {len(paths)} checkpoints: give one "
            f"--label per --checkpoint (or none)."
        )
    names = list(labels) if labels else _default_labels([Path(p) for p in paths])
    loaded = []
    for path, format, label in zip(paths, formats, names, strict=True):
        vit, spec = load_backbone(path, check_format(format))
        loaded.append(Checkpoint(label, Path(path), format, vit, spec))
    return loaded


def _default_labels(paths: Sequence[Path]) -> list[str]:
    names = [
        p.parent.name if p.stem == "backbone" and p.parent.name else p.stem
        for p in paths
    ]
    if len(set(names)) < len(names):  # same names: number them
        names = [f"{name} ({i})" for i, name in enumerate(names)]
    return names


@dataclass(frozen=True)
class _Settings:
    data: str | Path
    num_batches: int
    batch_size: int
    device: torch.device
    num_workers: int
    seed: int

    def open(self, transform: Any, *, train: bool) -> tuple[Dataset, list[str]]:
        """A seeded subset of num_batches * batch_size images of one split, and
        the class names."""
        dataset = open_dataset(self.data, train=train, transform=transform)
        classes = list(getattr(dataset, "classes", []))
        subset = seeded_subset(dataset, self.num_batches * self.batch_size, self.seed)
        return subset, classes

    def batches(self, dataset: Dataset, *, drop_last: bool = False) -> Iterator[Any]:
        """Batches of ``dataset`` on the device; seeded augmentations, so every
        checkpoint sees the same views."""
        size = len(dataset)  # type: ignore[arg-type]
        if size < (self.batch_size if drop_last else 3):
            raise GraftError(
                f"Data '{self.data}' gives {size} images here: too few for "
                f"batches of {self.batch_size}. Lower --batch-size or add images."
            )
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
        )
        with _seeded(self.seed):
            for batch in loader:
                yield self.to_device(batch)

    @property
    def data_name(self) -> str:
        """For titles: 'Fashion-MNIST' for the default data, else the folder name."""
        if str(self.data) == "default":
            return "Fashion-MNIST"
        return Path(self.data).name or str(self.data)

    def to_device(self, value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.to(self.device)
        if isinstance(value, (list, tuple)):
            return [self.to_device(v) for v in value]
        return value

    def eval_transform(self, input_size: int) -> Any:
        """Resize + centre crop + normalise (no randomness)."""
        return eval_transform(
            input_size=input_size, normalize=default_normalize(self.data)
        )

    def two_view_transform(self, input_size: int) -> Any:
        """The contrastive two-view augmentation at the data module's defaults."""
        defaults = augmentation_defaults(input_size)
        defaults.pop("mae_min_scale", None)
        return two_view_transform(
            input_size=input_size, normalize=default_normalize(self.data), **defaults
        )


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seeds python's, numpy's and torch's global RNGs (the augmentations draw
    from all three) and restores their states on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "checkpoint"


def _gradient_conflict(
    loaded: Sequence[Checkpoint], settings: _Settings, output: Path, method: str | type
) -> list[Path]:
    pngs: list[Path] = []
    tables: list[Path] = []
    for checkpoint in loaded:
        model = mtl_for_checkpoint(
            checkpoint.path,
            checkpoint.format,
            checkpoint.vit,
            checkpoint.spec,
            method=method,
            batch_size=settings.batch_size,
        )
        module = model.module.to(settings.device).train()
        transform = model.transform_factory(
            input_size=checkpoint.input_size,
            normalize=default_normalize(settings.data),
        )
        dataset, _ = settings.open(transform, train=True)
        result = measure_gradient_conflict(
            module.loss_terms,
            (batch[0] for batch in settings.batches(dataset, drop_last=True)),
            block_parameters(list(module.backbone.vit.blocks)),
        )
        stem = "gradient_conflict"
        if len(loaded) > 1:
            stem += f"_{_slug(checkpoint.label)}"
        png, *csvs = write_gradient_conflict(
            result,
            output,
            title=(
                f"Gradient conflict on {settings.data_name} (train): "
                f"{checkpoint.label}\n{model.heads}"
            ),
            stem=stem,
            extra_columns={"label": checkpoint.label, "heads": model.heads},
        )
        pngs.append(png)
        tables += csvs
    return pngs + tables


def _vic(
    loaded: Sequence[Checkpoint], settings: _Settings, output: Path, definition: str
) -> list[Path]:
    results = {}
    for checkpoint in loaded:
        transform = settings.two_view_transform(checkpoint.input_size)
        dataset, _ = settings.open(transform, train=False)
        vit = checkpoint.vit.to(settings.device)
        views = (batch[0] for batch in settings.batches(dataset))
        results[checkpoint.label] = measure_vic(vit, views, definition=definition)
    title = f"Variance-Invariance-Covariance per block, {settings.data_name} (held-out)"
    return write_vic(results, output, title=title, definition=definition)


def _attention_distance(
    loaded: Sequence[Checkpoint],
    settings: _Settings,
    output: Path,
    renormalize: bool,
) -> list[Path]:
    results = {}
    references = set()
    for checkpoint in loaded:
        dataset, _ = settings.open(
            settings.eval_transform(checkpoint.input_size), train=False
        )
        vit = checkpoint.vit.to(settings.device)
        images = (batch[0] for batch in settings.batches(dataset))
        results[checkpoint.label] = measure_attention_distance(
            vit, images, renormalize=renormalize
        )
        patch_h, patch_w = vit.patch_embed.patch_size
        rows, cols = vit.patch_embed.grid_size
        references.add(uniform_attention_distance((rows, cols), (patch_h, patch_w)))
    # One reference line only when every model has the same patch grid.
    reference = references.pop() if len(references) == 1 else None
    return write_attention_distance(
        results,
        output,
        title=f"Mean attention distance per block, {settings.data_name} (held-out)",
        uniform_distance=reference,
    )


def _tsne(
    loaded: Sequence[Checkpoint], settings: _Settings, output: Path
) -> list[Path]:
    results = {}
    class_names: list[str] = []
    for checkpoint in loaded:
        dataset, class_names = settings.open(
            settings.eval_transform(checkpoint.input_size), train=False
        )
        vit = checkpoint.vit.to(settings.device)
        features, labels = embed(vit, settings.batches(dataset))
        results[checkpoint.label] = tsne(features, labels, seed=settings.seed)
    return write_tsne(
        results,
        output,
        class_names=class_names or None,
        title=f"t-SNE of pooled features, {settings.data_name} (held-out)",
    )
