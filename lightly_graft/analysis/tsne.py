"""t-SNE of a model's features on a labelled set, coloured by class (Fig. 3).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Fig. 3: t-SNE (van der Maaten
& Hinton, 2008) of the pooled features of MoCo v3 and of Layer Grafted
Pre-training; colours are classes. scikit-learn's ``TSNE`` does the embedding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor, nn

from lightly_graft.analysis.plotting import colors, new_figure, save_figure, write_csv
from lightly_graft.modules.embed import embed_batches

#: Largest set embedded with exact t-SNE (Barnes-Hut above).
EXACT_MAX_SAMPLES = 512


@dataclass(frozen=True)
class TSNEResult:
    """2-d embedding of one model's features.

    Attributes:
        coordinates: (num_samples, 2) t-SNE coordinates.
        labels: (num_samples,) integer class of each sample.
    """

    coordinates: np.ndarray
    labels: np.ndarray


def embed(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and labels of a labelled set, in eval mode.

    Args:
        model: Maps (batch_size, C, H, W) images to (batch_size, dim) features (a
            timm VisionTransformer with ``num_classes=0``, or a zoo method).
        batches: (images, labels) on the model's device.

    Returns:
        (num_samples, dim) float32 features and (num_samples,) int64 labels.
    """
    embedded = embed_batches(model, batches)
    if embedded is None:
        raise ValueError("embed got no batches.")
    return embedded[0].cpu().numpy(), embedded[1].cpu().numpy()


def tsne(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    max_iter: int = 1000,
) -> TSNEResult:
    """t-SNE of features (PCA initialisation, fixed seed).

    Up to ``EXACT_MAX_SAMPLES`` samples the exact gradient is used, above that
    Barnes-Hut: measured here (2 cores, 64-d features), exact took 8.7 s CPU for
    512 samples against 13.4 s for Barnes-Hut, and 27 s against 17 s for 1024; on
    small sets Barnes-Hut's OpenMP start-up alone costs seconds.

    Args:
        features: (num_samples, dim), num_samples >= 3.
        labels: (num_samples,) classes, carried through.
        perplexity: scikit-learn's perplexity; lowered to (num_samples - 1) / 3
            for small sets (it must stay below num_samples).
        seed: Random state.
        max_iter: Optimisation iterations (scikit-learn's minimum is 250).

    Returns:
        The embedding.
    """
    count = features.shape[0]
    if count < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {count}.")
    perplexity = max(1.0, min(perplexity, (count - 1) / 3))
    from sklearn.manifold import TSNE  # scikit-learn only when a t-SNE is drawn

    coordinates = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=max_iter,
        method="exact" if count <= EXACT_MAX_SAMPLES else "barnes_hut",
    ).fit_transform(features.astype(np.float64))
    return TSNEResult(coordinates=coordinates, labels=np.asarray(labels))


def write_tsne(
    results: Mapping[str, TSNEResult],
    output: Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "t-SNE of features",
    stem: str = "tsne",
) -> list[Path]:
    """Writes ``{stem}.png`` (one panel per model) and ``{stem}.csv``.

    Args:
        results: Model label -> its embedding.
        output: Directory to write into.
        class_names: Name of each class index, for the legend.
        title: Figure title.
        stem: File name stem.

    Returns:
        The paths written: PNG, CSV (one row per model and sample).
    """
    rows = [
        {
            "label": label,
            "sample": index,
            "x": float(x),
            "y": float(y),
            "class": _class_name(int(cls), class_names),
        }
        for label, result in results.items()
        for index, ((x, y), cls) in enumerate(
            zip(result.coordinates, result.labels, strict=True)
        )
    ]
    csv_path = write_csv(
        output / f"{stem}.csv", rows, ["label", "sample", "x", "y", "class"]
    )
    figure = plot_tsne(results, class_names=class_names, title=title)
    return [save_figure(figure, output / f"{stem}.png"), csv_path]


def plot_tsne(
    results: Mapping[str, TSNEResult],
    *,
    class_names: Sequence[str] | None,
    title: str,
) -> Figure:
    """Scatter of every model's embedding, coloured by class, shared legend."""
    figure = new_figure(len(results), width=5.0, height=4.8)
    classes = sorted({int(c) for r in results.values() for c in r.labels})
    palette = dict(zip(classes, colors(len(classes)), strict=True))
    for axes, (label, result) in zip(figure.axes, results.items(), strict=True):
        for cls in classes:
            chosen = result.labels == cls
            axes.scatter(
                result.coordinates[chosen, 0],
                result.coordinates[chosen, 1],
                s=8,
                alpha=0.7,
                color=palette[cls],
                edgecolors="none",
            )
        axes.set_title(f"{label} ({len(result.labels)} samples)", fontsize=10)
        axes.set_xlabel("t-SNE 1")
        axes.set_ylabel("t-SNE 2")
        axes.set_xticks([])
        axes.set_yticks([])
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=palette[c],
            label=_class_name(c, class_names),
        )
        for c in classes
    ]
    figure.legend(
        handles=handles,
        loc="outside right center",
        title="class",
        fontsize=8,
        markerscale=2,
    )
    figure.suptitle(title, fontsize=11)
    return figure


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return str(index)
