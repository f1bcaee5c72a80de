"""Training-step time and FLOPs of zoo methods on one ViT, in one run.

The question it answers first: how much does Masked MoCo's chunking (n = 8 online
chunks per view, papers/masked_moco_improved_baseline.md §3.2) save per training
step against GraftedMoCo's plain MoCo v3 step on the same ViT? The paper claims
"around 20% FLOPs" per epoch (§1, Fig. 3a).

A step is ``training_loss`` + ``backward`` + AdamW ``step`` + the momentum update.
Time: ``--warmup`` steps, then the median of ``--steps`` steps (wall clock, this
CPU, ``torch.set_num_threads(--threads)``). FLOPs: ``torch.utils.flop_counter.
FlopCounterMode`` over ``training_loss`` + ``backward``; the counter has no
formula for the CPU fused attention kernel (``scaled_dot_product_attention``
would count 0), so attention is switched to timm's unfused path
(``fused_attn = False``, the same math) while counting.

Cases share the backbone and the head sizes; ``moco_v3`` is GraftedMoCo with
BatchNorm heads and a frozen patch embedding, and the ``masked_moco_*`` cases use
the same heads and freezing so that only the chunking differs (the defaults of
M-MoCo, LayerNorm heads and a trained patch embedding, are ``masked_moco_n8_ln``).
``masked_moco_n8_repeat`` encodes chunks with lightly's own path,
``backbone(images.repeat(n, 1, 1, 1), idx_keep=...)``, which patch-embeds every
image n times, to show what ``modules.chunks.encode_chunks`` saves.

Usage (defaults: FACTS.md's CPU ViT: 32 px, patch 4, dim 192, depth 12, batch 64,
4096-wide heads)::

    python benchmarks/step_bench.py                       # time + FLOPs
    python benchmarks/step_bench.py --flops-only --img-size 224 --patch-size 16 \\
        --embed-dim 384 --depth 12 --num-heads 6 --batch-size 4 --tag vits16

Writes ``benchmarks/results/step_bench[_TAG].md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightly_graft.bench.budget import unfused_attention  # noqa: E402
from lightly_graft.methods import masked_moco as masked_moco_module  # noqa: E402
from lightly_graft.methods.base import SSLMethod, move_momentum  # noqa: E402
from lightly_graft.methods.grafted_moco import GraftedMoCo  # noqa: E402
from lightly_graft.methods.masked_moco import MaskedMoCo  # noqa: E402
from lightly_graft.modules.chunks import random_chunks  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Case:
    """One row: how to build the method and what its knobs are."""

    name: str
    build: Callable[[dict[str, Any], dict[str, Any]], SSLMethod]
    chunks: str = "-"
    repeat_path: bool = False


def _moco(backbone: dict[str, Any], heads: dict[str, Any]) -> SSLMethod:
    return GraftedMoCo(
        batch_size_per_device=1, num_classes=0, backbone=backbone, **heads
    )


def _masked(n: int, m: int = 1, **extra: Any) -> Callable[..., SSLMethod]:
    def build(backbone: dict[str, Any], heads: dict[str, Any]) -> SSLMethod:
        kwargs = {"head_norm": "batch", "freeze_patch_embed": True, **heads, **extra}
        return MaskedMoCo(
            batch_size_per_device=1,
            num_classes=0,
            backbone=backbone,
            num_chunks=n,
            num_target_chunks=m,
            log_kappa=False,
            **kwargs,
        )

    return build


CASES = {
    case.name: case
    for case in [
        Case("moco_v3", _moco),
        Case("masked_moco_n1", _masked(1), "n=1"),
        Case("masked_moco_n8", _masked(8), "n=8"),
        Case("masked_moco_n8_repeat", _masked(8), "n=8", repeat_path=True),
        Case("masked_moco_n8_m8", _masked(8, 8), "n=8, m=8"),
        Case(
            "masked_moco_n8_ln",
            _masked(8, head_norm="layer", freeze_patch_embed=False),
            "n=8 (LN, PE trained)",
        ),
    ]
}


def _repeat_chunks(
    encoder: Any,
    images: torch.Tensor,
    num_chunks: int,
    final_norm: bool = True,
    drop_remainder: bool = False,
) -> Any:
    """lightly's own chunk path: every image patch-embedded ``num_chunks`` times."""
    from lightly_graft.functional.chunking import chunk_token_indices

    num_patches = encoder.vit.patch_embed.num_patches
    idx = chunk_token_indices(
        images.shape[0], num_patches, num_chunks, images.device, drop_remainder
    )
    tokens = encoder.preprocess(images.repeat(num_chunks, 1, 1, 1), idx_keep=idx)
    tokens = encoder.vit.blocks(encoder.vit.norm_pre(tokens))
    return encoder.vit.norm(tokens) if final_norm else tokens


@contextlib.contextmanager
def chunk_path(repeat: bool) -> Iterator[None]:
    """Swaps Masked MoCo's chunk encoder for lightly's repeat path (bench only)."""
    original = masked_moco_module.random_chunks
    masked_moco_module.random_chunks = _repeat_chunks if repeat else random_chunks  # type: ignore[assignment]
    try:
        yield
    finally:
        masked_moco_module.random_chunks = original  # type: ignore[assignment]


def train_step(
    method: SSLMethod, views: list[torch.Tensor], optimizer: torch.optim.Optimizer
) -> None:
    if isinstance(method, GraftedMoCo):
        move_momentum(method.momentum_pairs(), 0.99)
    optimizer.zero_grad(set_to_none=True)
    method.training_loss(views).loss.backward()
    optimizer.step()


def step_flops(method: SSLMethod, views: list[torch.Tensor]) -> int:
    with unfused_attention(method), FlopCounterMode(display=False) as counter:
        method.training_loss(views).loss.backward()
    method.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


@dataclass
class Bench:
    """A built case: its method, views, optimizer and measurements."""

    case: Case
    method: SSLMethod
    views: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    times: list[float]

    def step(self) -> float:
        with chunk_path(self.case.repeat_path):
            start = time.perf_counter()
            train_step(self.method, self.views, self.optimizer)
            return time.perf_counter() - start


def build(case: Case, args: argparse.Namespace) -> Bench:
    backbone = {
        "name": "vit_base_patch16_224",
        "img_size": args.img_size,
        "patch_size": args.patch_size,
        "embed_dim": args.embed_dim,
        "depth": args.depth,
        "num_heads": args.num_heads,
    }
    heads = {"projection_hidden_dim": args.hidden_dim, "projection_dim": args.out_dim}
    torch.manual_seed(0)
    method = case.build(backbone, heads).train()
    generator = torch.Generator().manual_seed(0)
    size = (args.batch_size, 3, args.img_size, args.img_size)
    views = [torch.randn(size, generator=generator) for _ in range(2)]
    params = [p for p in method.parameters() if p.requires_grad]
    return Bench(case, method, views, torch.optim.AdamW(params, lr=1e-4), [])


def online_encoder_flops(method: SSLMethod, views: list[torch.Tensor]) -> int:
    """FLOPs of the online encoder alone (forward + backward, both views): the
    n chunk sequences for Masked MoCo, the full views for MoCo v3."""
    with unfused_attention(method), FlopCounterMode(display=False) as counter:
        for view in views:
            if isinstance(method, MaskedMoCo):
                chunks = masked_moco_module.random_chunks(
                    method.backbone,
                    view,
                    method.num_chunks,
                    drop_remainder=method.drop_remainder,
                )
                features = chunks[:, 0]
            else:
                features = method.backbone(view)
            features.sum().backward()
    method.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """FLOPs per case, then interleaved timing: every round runs one step of
    every case (in a rotating order), so that load on a shared machine hits all
    cases alike."""
    rows = []
    for name in args.cases:
        bench = build(CASES[name], args)
        with chunk_path(bench.case.repeat_path):
            gflops = step_flops(bench.method, bench.views) / 1e9
            encoder = online_encoder_flops(bench.method, bench.views) / 1e9
        rows.append(
            {
                "case": name,
                "chunks": bench.case.chunks,
                "gflops": gflops,
                "encoder_gflops": encoder,
            }
        )
        print(rows[-1], flush=True)
        if args.flops_only:
            continue
        for _ in range(args.warmup):
            bench.step()
        rows[-1]["bench"] = bench
    if args.flops_only:
        return rows
    for round_ in range(args.steps):
        k = round_ % len(rows)
        for row in rows[k:] + rows[:k]:
            row["bench"].times.append(row["bench"].step())
        print(f"round {round_ + 1}/{args.steps}", flush=True)
    for row in rows:
        times = row.pop("bench").times
        row.update(
            median_s=statistics.median(times), min_s=min(times), max_s=max(times)
        )
    return rows


def write_results(
    rows: list[dict[str, Any]], args: argparse.Namespace, command: str
) -> Path:
    base = next(r for r in rows if r["case"] == "moco_v3")
    for row in rows:
        row["flop_ratio"] = row["gflops"] / base["gflops"]
        row["encoder_flop_ratio"] = row["encoder_gflops"] / base["encoder_gflops"]
        if "median_s" in row:
            row["time_ratio"] = row["median_s"] / base["median_s"]
            row["min_time_ratio"] = row["min_s"] / base["min_s"]
            row["img_per_s"] = args.batch_size / row["median_s"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "step_bench" + (f"_{args.tag}" if args.tag else "")
    keys = list(rows[-1].keys() | rows[0].keys())
    order = ["case", "chunks", "median_s", "min_s", "max_s", "img_per_s"]
    order += ["time_ratio", "min_time_ratio", "gflops", "flop_ratio"]
    order += ["encoder_gflops"]
    order += ["encoder_flop_ratio"]
    keys = [k for k in order if k in keys]
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Training step: Masked MoCo vs MoCo v3 ({args.tag or 'cpu'})",
        "",
        f"Command: `{command}`",
        "",
        f"ViT: {args.img_size} px, patch {args.patch_size}, dim {args.embed_dim}, "
        f"depth {args.depth}, heads {args.num_heads}; batch {args.batch_size} x 2 "
        f"views; heads {args.hidden_dim}/{args.out_dim}. torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}."
        + (
            ""
            if args.flops_only
            else f" Time: median of {args.steps} interleaved rounds (one step of "
            f"every case per round) after {args.warmup} warm-up steps each."
        ),
        f"Load average (1 min) at start / end: {args.load_start:.1f} / "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: on a shared machine "
        "min_s (the least disturbed step) is the steadier estimate.",
        "gflops: FlopCounterMode, forward + backward of the whole loss (both views, "
        "online + target encoders and heads; unfused attention). encoder_gflops: "
        "the online encoder alone, forward + backward of both views.",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    for row in rows:
        cells = [
            f"{row[k]:.4g}" if isinstance(row.get(k), float) else str(row.get(k, ""))
            for k in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    path = RESULTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--embed-dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--num-heads", type=int, default=3)
    parser.add_argument("--hidden-dim", type=int, default=4096)
    parser.add_argument("--out-dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flops-only", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args(argv)
    if "moco_v3" not in args.cases:
        args.cases.insert(0, "moco_v3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    rows = measure(args)
    command = "python benchmarks/step_bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(write_results(rows, args, command.strip()).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
