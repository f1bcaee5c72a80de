"""Variance-Invariance-Covariance per block for several checkpoints (Fig. 6).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), Section 3.4, Fig. 6: the VIC
statistics (Bardes et al., 2022) of every block's output, token-averaged and
l2-normalised, between two augmented views; one curve per model. The statistics
are defined in :mod:`lightly_graft.functional.vic` (``definition="paper"``, the
official ``evaluate_VIC``, by default). As the official code does, they are
computed per batch and averaged over batches (each batch weighs the same);
``pool_batches=True`` computes them once on all images instead. The covariance
sum has a finite-sample floor that falls with the batch size, so compare models
measured with the same batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_graft.analysis.plotting import (
    block_ticks,
    colors,
    new_figure,
    save_figure,
    write_csv,
)
from lightly_graft.functional.vic import (
    VIC_DEFINITIONS,
    VICStatistics,
    token_average,
    vic_statistics,
)
from lightly_graft.modules.embed import eval_mode

STATISTICS = ("variance", "covariance", "invariance")  # the paper's panel order


@torch.no_grad()
def block_features(
    vit: VisionTransformer, images: Tensor, *, include_prefix_tokens: bool = True
) -> list[Tensor]:
    """Token-averaged output of every block.

    Args:
        vit: A timm VisionTransformer (its ``blocks`` are hooked).
        images: (batch_size, C, H, W).
        include_prefix_tokens: Average over all tokens, CLS included (the paper:
            "averaged over all tokens"), or over the patch tokens only.

    Returns:
        One (batch_size, embed_dim) tensor per block, lowest block first.
    """
    skip = 0 if include_prefix_tokens else vit.num_prefix_tokens
    outputs: dict[int, Tensor] = {}
    handles = [
        block.register_forward_hook(
            lambda module, args, output, index=index: outputs.__setitem__(
                index, token_average(output[:, skip:])
            )
        )
        for index, block in enumerate(vit.blocks)
    ]
    try:
        vit.forward_features(images)
    finally:
        for handle in handles:
            handle.remove()
    return [outputs[i] for i in range(len(outputs))]


@torch.no_grad()
def measure_vic(
    vit: VisionTransformer,
    view_batches: Iterable[Sequence[Tensor]],
    *,
    include_prefix_tokens: bool = True,
    definition: str = "paper",
    normalize: bool = True,
    pool_batches: bool = False,
) -> list[VICStatistics]:
    """VIC statistics of every block over the given image pairs.

    The model runs in eval mode (the official code measures in train mode, which
    only matters for models with dropout or stochastic depth).

    Args:
        vit: A timm VisionTransformer.
        view_batches: Batches of (at least) two views of the same images; the first
            two are used, each (batch_size >= 2, C, H, W) on the model's device.
        include_prefix_tokens: See :func:`block_features`.
        definition: ``"paper"`` or ``"per_entry"``
            (:func:`~lightly_graft.functional.vic.vic_statistics`).
        normalize: Apply the definition's l2 normalisations (the paper does).
        pool_batches: Compute the statistics once on the features of all batches
            instead of per batch and averaged over batches (the paper's way;
            a batch of one image, which has no variance, is then left out).

    Returns:
        One :class:`VICStatistics` per block, lowest first.

    Raises:
        ValueError: No batches, or an unknown ``definition``.
    """
    if definition not in VIC_DEFINITIONS:
        raise ValueError(
            f"Unknown VIC definition '{definition}'; valid definitions: "
            f"{', '.join(VIC_DEFINITIONS)}."
        )
    pooled_a: list[list[Tensor]] = []
    pooled_b: list[list[Tensor]] = []
    with eval_mode(vit):
        for views in view_batches:
            for pooled, view in ((pooled_a, views[0]), (pooled_b, views[1])):
                features = block_features(
                    vit, view, include_prefix_tokens=include_prefix_tokens
                )
                pooled.append([f.double().cpu() for f in features])
    if not pooled_a:
        raise ValueError("measure_vic got no batches.")
    depth = len(pooled_a[0])
    if pool_batches:
        pooled_a = [[torch.cat([batch[i] for batch in pooled_a]) for i in range(depth)]]
        pooled_b = [[torch.cat([batch[i] for batch in pooled_b]) for i in range(depth)]]
    elif len(pooled_a) > 1:  # e.g. a last batch of one image
        keep = [i for i, batch in enumerate(pooled_a) if batch[0].shape[0] >= 2]
        pooled_a = [pooled_a[i] for i in keep] or pooled_a
        pooled_b = [pooled_b[i] for i in keep] or pooled_b
    per_batch = [
        [
            vic_statistics(a[i], b[i], definition=definition, normalize=normalize)
            for i in range(depth)
        ]
        for a, b in zip(pooled_a, pooled_b, strict=True)
    ]
    return [_mean([batch[i] for batch in per_batch]) for i in range(depth)]


def _mean(statistics: Sequence[VICStatistics]) -> VICStatistics:
    count = len(statistics)
    return VICStatistics(
        variance=sum(s.variance for s in statistics) / count,
        invariance=sum(s.invariance for s in statistics) / count,
        covariance=sum(s.covariance for s in statistics) / count,
    )


def write_vic(
    results: Mapping[str, Sequence[VICStatistics]],
    output: Path,
    *,
    title: str = "Variance-Invariance-Covariance per block",
    stem: str = "vic",
    definition: str = "paper",
) -> list[Path]:
    """Writes ``{stem}.png`` (three panels, one curve per model) and ``{stem}.csv``.

    Args:
        results: Model label -> its statistics per block.
        output: Directory to write into.
        title: Figure title.
        stem: File name stem.
        definition: The definition the statistics were measured with (axis
            titles and the CSV's ``definition`` column).

    Returns:
        The paths written: PNG, CSV (one row per model and block).
    """
    rows = [
        {
            "label": label,
            "block": block,
            "variance": stats.variance,
            "covariance": stats.covariance,
            "invariance": stats.invariance,
            "definition": definition,
        }
        for label, per_block in results.items()
        for block, stats in enumerate(per_block)
    ]
    csv_path = write_csv(
        output / f"{stem}.csv", rows, ["label", "block", *STATISTICS, "definition"]
    )
    figure = plot_vic(results, title=title, definition=definition)
    png = save_figure(figure, output / f"{stem}.png")
    return [png, csv_path]


_DESCRIPTIONS = {
    "paper": {
        "variance": "Variance (mean sqrt(var + 1e-4), centred)",
        "covariance": "Covariance (sum sq. off-diagonal, centred)",
        "invariance": "Invariance (MSE between views)",
    },
    "per_entry": {
        "variance": "Variance (mean std per dim)",
        "covariance": "Covariance (mean sq. off-diagonal)",
        "invariance": "Invariance (MSE between views)",
    },
}


def plot_vic(
    results: Mapping[str, Sequence[VICStatistics]],
    *,
    title: str,
    definition: str = "paper",
) -> Figure:
    """Variance, covariance and invariance against block index, one line per model."""
    figure = new_figure(3, width=4.6, height=3.8)
    descriptions = _DESCRIPTIONS[definition]
    depth = max((len(v) for v in results.values()), default=1)
    for axes, name in zip(figure.axes, STATISTICS, strict=True):
        for (label, per_block), color in zip(
            results.items(), colors(len(results)), strict=True
        ):
            axes.plot(
                range(len(per_block)),
                [getattr(stats, name) for stats in per_block],
                marker="o",
                markersize=4,
                color=color,
                label=label,
            )
        axes.set_title(descriptions[name], fontsize=10)
        axes.set_ylabel(name)
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        block_ticks(axes, depth)
        axes.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 4),
        fontsize=9,
    )
    figure.suptitle(
        f"{title}\n(token-averaged, l2-normalised block outputs of two views; "
        f"definition '{definition}')",
        fontsize=11,
    )
    return figure
