"""GPU measurements of issue 13.6, one part per call (benchmarks/gpu_check.sh).

Parts (``python benchmarks/gpu_bench.py PART --out DIR``), each writing
``DIR/PART.md`` (a table row or a few lines) so that a part that fails or runs
out of time leaves the others' results:

- ``train-mae``, ``train-moco``, ``train-grafted``: ViT-B/16 training throughput
  (images/s) of our full Lightning step in ``bf16-mixed`` with timm's SDPA
  attention (``fused_attn``, on by default), on random 224 px images: MAE (mask
  0.75, decoder 512 x 8), MoCo v3 (``GraftedMoCo``, 4096/256 heads, two views)
  and Layer Grafted step ii (the same + ``Grafting`` of all blocks from a
  checkpoint, with the l2 anchor). Model-FLOPs utilisation: the FLOPs of one
  step (``FlopCounterMode`` over ``training_loss`` + ``backward``, attention
  unfused while counting, the same math) x steps/s / the chip's bf16 dense peak
  (a table by device name, or ``--peak-tflops``). Images/s counts images, not
  views.
- ``augment``: the batched kornia views (``GraftedMoCo``'s two views, 224 px)
  made from a uint8 batch on the GPU, images/s.
- ``knn``: ``knn_classify`` on CUDA tensors, backend ``torch`` (matmul + topk)
  against ``faiss`` (``faiss.knn_gpu``; skipped without a GPU build of faiss),
  same top-1 count, and which one ``auto`` picks now. The faster should be
  ``auto`` (functional/knn.py ``_resolve_backend``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from step_bench import unfused_attention  # noqa: E402
from step_harness import PRESETS, fit_timed, loader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

# Dense bf16 tensor-core peaks (NVIDIA data sheets, SXM parts; PCIe H100: 756).
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0}
# --cpu-dry-run swaps these for the CPU and the quickstart ViT: it checks that
# every part runs (no numbers worth reading) on a machine without CUDA.
DEVICE, BACKBONE, HEADS, IMG = "cuda", PRESETS["vitb16"]["backbone"], PRESETS["vitb16"]["heads"], 224  # fmt: skip


def _peak(args: argparse.Namespace) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if DEVICE != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return value
    return None


def _module(part: str, batch: int):
    from lightly_graft.methods.grafted_moco import GraftedMoCo
    from lightly_graft.methods.mae import MAE

    if part == "train-mae":
        return MAE(batch_size_per_device=batch, num_classes=0, backbone=BACKBONE)
    return GraftedMoCo(
        batch_size_per_device=batch, num_classes=0, backbone=BACKBONE, **HEADS
    )


def _step_flops(module, batch: int, views: int) -> int:
    module = module.to(DEVICE).train()
    images = [torch.randn(batch, 3, IMG, IMG, device=DEVICE) for _ in range(views)]
    counter = FlopCounterMode(display=False)
    with unfused_attention(module), counter:
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = module.training_loss(images).loss
        loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train(part: str, args: argparse.Namespace) -> str:
    from lightly_graft.training.grafting import Grafting

    views = 1 if part == "train-mae" else 2
    batch = args.mae_batch if part == "train-mae" else args.moco_batch
    torch.manual_seed(0)
    flops = _step_flops(_module(part, batch), batch, views)
    module = _module(part, batch)
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = []
        if part == "train-grafted":
            checkpoint = Path(tmp) / "mim.pt"
            torch.save(module.backbone.vit.state_dict(), checkpoint)
            callbacks.append(Grafting(checkpoint, format="timm", anchor_weight=1e-4))
        data = loader(batch, args.warmup + args.steps, IMG, views)
        times = fit_timed(
            module,
            data,
            args.warmup + args.steps,
            "bf16-mixed",
            Path(tmp),
            callbacks,
            accelerator="gpu" if DEVICE == "cuda" else "cpu",
        )[args.warmup :]
    step = statistics.median(times)
    peak = _peak(args)
    mfu = f"{flops / step / (peak * 1e12):.1%}" if peak else "n/a (unknown peak)"
    return (
        f"| {part} | {batch} x {views} | {batch / step:.0f} | {step * 1e3:.1f} "
        f"({min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}) | {flops / 1e12:.2f} | "
        f"{mfu} |"
    )


def augment(args: argparse.Namespace) -> str:
    from lightly_graft.methods.grafted_moco import make_batched_transform

    views = make_batched_transform(input_size=IMG)
    size = IMG * 8 // 7
    batch = torch.randint(0, 256, (args.moco_batch, 3, size, size), dtype=torch.uint8)
    batch = batch.to(DEVICE)
    for _ in range(args.warmup):
        views(batch)
    _sync()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        views(batch)
        _sync()
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return (
        f"Batched views (GraftedMoCo's two {IMG} px views from {size} px uint8, "
        f"batch {args.moco_batch}, on {DEVICE}): {args.moco_batch / step:.0f} images/s "
        f"(median of {args.steps} batches, {step * 1e3:.1f} ms a batch)."
    )


def knn(args: argparse.Namespace) -> str:
    from lightly_graft.functional import knn as knn_module

    generator = torch.Generator().manual_seed(0)
    dim, classes = 768, 1000
    centroids = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=1)  # fmt: skip
    bank_labels = torch.randint(0, classes, (args.knn_bank,), generator=generator)
    query_labels = torch.randint(0, classes, (args.knn_queries,), generator=generator)
    bank = (centroids[bank_labels] + 0.05 * torch.randn(args.knn_bank, dim)).to(DEVICE)
    queries = (centroids[query_labels] + 0.05 * torch.randn(args.knn_queries, dim)).to(DEVICE)  # fmt: skip
    bank_labels = bank_labels.to(DEVICE)
    rows, top1 = [], {}
    backends = ["torch"]
    faiss = knn_module._import_faiss()
    if faiss is not None and (DEVICE != "cuda" or knn_module._faiss_has_gpu(faiss)):
        backends.append("faiss")
    for backend in backends:

        def call(backend: str = backend) -> torch.Tensor:
            return knn_module.knn_classify(
                queries, bank, bank_labels, classes, backend=backend
            )

        call()
        _sync()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            predictions = call()
            _sync()
            times.append(time.perf_counter() - start)
        top1[backend] = predictions[:, 0].cpu()
        rows.append(f"{backend} {statistics.median(times):.3f} s")
    same = (
        f"; same top-1 on {(top1['torch'] == top1['faiss']).sum()}/{args.knn_queries}"
        if "faiss" in top1
        else "; faiss-gpu not installed: torch only"
    )
    auto = knn_module._resolve_backend("auto", torch.device(DEVICE), 200)
    return (
        f"kNN on {DEVICE} (bank {args.knn_bank} x {dim}, {args.knn_queries} queries, "
        f"k=200, {classes} classes; median of 3): "
        + ", ".join(rows)
        + same
        + f"; `auto` resolves to {auto}."
    )


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    global DEVICE, BACKBONE, HEADS, IMG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "part", choices=["train-mae", "train-moco", "train-grafted", "augment", "knn"]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mae-batch", type=int, default=256)
    parser.add_argument("--moco-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--knn-bank", type=int, default=500_000)
    parser.add_argument("--knn-queries", type=int, default=50_000)
    parser.add_argument("--peak-tflops", type=float)
    parser.add_argument("--cpu-dry-run", action="store_true", help="see DEVICE")
    args = parser.parse_args()
    if args.cpu_dry_run:
        quick = PRESETS["quickstart"]
        DEVICE, BACKBONE, HEADS = "cpu", quick["backbone"], quick["heads"]
        IMG = int(BACKBONE["img_size"])
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_bench.py needs a CUDA device (or --cpu-dry-run).")
    if args.part.startswith("train"):
        text = train(args.part, args)
    elif args.part == "augment":
        text = augment(args)
    else:
        text = knn(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.part}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
