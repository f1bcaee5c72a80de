"""Mean attention distance per block and head for several checkpoints (Fig. 7).

Layer Grafted Pre-training (Jiang et al., ICLR 2023), appendix A.1, Fig. 7, after
Dosovitskiy et al. (2021), Fig. 7: the attention-weighted pixel distance between
query and key patches, per head, against depth; one colour per model, a dot per
head and a line through the mean over heads. Definition and CLS handling:
:func:`lightly_graft.functional.attention.mean_attention_distance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    wrap,
    write_csv,
)
from lightly_graft.functional.attention import mean_attention_distance
from lightly_graft.modules.attention_hooks import capture_attention
from lightly_graft.modules.embed import eval_mode


@torch.no_grad()
def measure_attention_distance(
    vit: VisionTransformer,
    image_batches: Iterable[Tensor],
    *,
    renormalize: bool = False,
) -> Tensor:
    """Mean attention distance of every head of every block, in pixels.

    The model runs in eval mode; each block's map is reduced as soon as it is
    computed, so memory holds one block's map at a time.

    Args:
        vit: A timm VisionTransformer.
        image_batches: Batches (batch_size, C, H, W) on the model's device.
        renormalize: Rescale each query's weights over the patches to sum to 1
            after dropping the prefix tokens (default: no, as the paper's code).

    Returns:
        (depth, num_heads) distances averaged over query patches and images.
    """
    totals: dict[int, Tensor] = {}
    count = 0
    with eval_mode(vit):
        for images in image_batches:
            _add_batch(vit, images, totals, renormalize)
            count += images.shape[0]
    if count == 0:
        raise ValueError("measure_attention_distance got no batches.")
    return torch.stack([totals[i] for i in range(len(totals))]) / count


def _add_batch(
    vit: VisionTransformer,
    images: Tensor,
    totals: dict[int, Tensor],
    renormalize: bool,
) -> None:
    """Adds batch_size * (per-head distance) of every block to ``totals``."""
    patch_h, patch_w = vit.patch_embed.patch_size
    grid = (images.shape[-2] // patch_h, images.shape[-1] // patch_w)

    def accumulate(index: int, attention: Tensor) -> None:
        distance = mean_attention_distance(
            attention,
            grid_size=grid,
            patch_size=(patch_h, patch_w),
            num_prefix_tokens=vit.num_prefix_tokens,
            renormalize=renormalize,
        )
        weighted = distance.cpu() * images.shape[0]
        totals[index] = totals[index] + weighted if index in totals else weighted

    with capture_attention(list(vit.blocks), accumulate):
        vit.forward_features(images)


def write_attention_distance(
    results: Mapping[str, Tensor],
    output: Path,
    *,
    title: str = "Mean attention distance per block",
    stem: str = "attention_distance",
    uniform_distance: float | None = None,
) -> list[Path]:
    """Writes ``{stem}.png``, ``{stem}.csv`` (per block) and ``{stem}_heads.csv``.

    Args:
        results: Model label -> (depth, num_heads) distances in pixels.
        output: Directory to write into.
        title: Figure title.
        stem: File name stem.
        uniform_distance: Distance of uniform attention
            (:func:`~lightly_graft.functional.attention.uniform_attention_distance`),
            drawn as a reference line when given.

    Returns:
        The paths written: PNG, per-block CSV (mean/min/max over heads), per-head
        CSV.
    """
    block_rows = [
        {
            "label": label,
            "block": block,
            "mean_distance_px": float(row.mean()),
            "min_head_px": float(row.min()),
            "max_head_px": float(row.max()),
            "num_heads": row.numel(),
        }
        for label, distances in results.items()
        for block, row in enumerate(distances)
    ]
    head_rows = [
        {"label": label, "block": block, "head": head, "distance_px": float(value)}
        for label, distances in results.items()
        for block, row in enumerate(distances)
        for head, value in enumerate(row)
    ]
    fields = ["label", "block", "mean_distance_px", "min_head_px", "max_head_px"]
    blocks_csv = write_csv(output / f"{stem}.csv", block_rows, [*fields, "num_heads"])
    heads_csv = write_csv(
        output / f"{stem}_heads.csv",
        head_rows,
        ["label", "block", "head", "distance_px"],
    )
    figure = plot_attention_distance(
        results, title=title, uniform_distance=uniform_distance
    )
    png = save_figure(figure, output / f"{stem}.png")
    return [png, blocks_csv, heads_csv]


def plot_attention_distance(
    results: Mapping[str, Tensor], *, title: str, uniform_distance: float | None = None
) -> Figure:
    """Per-head scatter and mean line against block index, one colour per model."""
    figure = new_figure(width=6.5)
    axes = figure.axes[0]
    count = len(results)
    for offset, ((label, distances), color) in enumerate(
        zip(results.items(), colors(count), strict=True)
    ):
        depth, num_heads = distances.shape
        # Shift each model's dots a little so that models do not hide each other.
        shift = (offset - (count - 1) / 2) * min(0.12, 0.6 / max(count, 1))
        blocks = torch.arange(depth, dtype=torch.float64)
        axes.scatter(
            (blocks + shift).repeat_interleave(num_heads),
            distances.flatten(),
            s=12,
            alpha=0.5,
            color=color,
            edgecolors="none",
        )
        axes.plot(
            blocks,
            distances.mean(dim=1),
            color=color,
            marker="o",
            markersize=4,
            label=label,
        )
    if uniform_distance is not None:
        axes.axhline(
            uniform_distance,
            color="grey",
            linestyle=":",
            label=f"uniform attention ({uniform_distance:.1f} px)",
        )
    depth = max((d.shape[0] for d in results.values()), default=1)
    block_ticks(axes, depth)
    axes.set_ylabel("Mean attention distance (pixels)")
    axes.ticklabel_format(axis="y", useOffset=False, style="plain")
    highest = max([float(d.max()) for d in results.values()] + [uniform_distance or 0])
    axes.set_ylim(0, 1.2 * highest if highest > 0 else 1.0)
    axes.set_title(wrap(f"{title}\n(dots: heads, line: mean over heads)"), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure
