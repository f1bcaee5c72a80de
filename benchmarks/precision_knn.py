"""Does bf16-mixed keep the kNN accuracy of fp32? Short seeded trainings at a
shipped recipe size, fp32 against bf16-mixed, two seeds each (issue 13.3).

`precision_bench.py` measures the speed; a recipe switches to bf16 only if it is
faster *and* its kNN accuracy stays within seed noise of fp32. This script trains
MoCo v3 (``grafted_moco``, from scratch) at the size of the recipes/*.yaml
recipes (``recipes192``: 32 px, patch 4, width 192, depth 6, 1024/256 heads,
batch 128; the size where bf16 steps are faster) for ``--steps`` batches with
each precision and seed through ``lightly-graft train``, then compares:

- the bf16 - fp32 difference of the mean kNN top-1 over seeds, against
- the seed noise: the spread (max - min) of the fp32 seeds.

Within noise means ``|bf16 - fp32| <= fp32 spread``. A short run checks that
bf16 does not change what the first steps learn, not the final accuracy of a
full recipe.

Usage::

    python benchmarks/precision_knn.py                      # 2 seeds x 2 precisions
    python benchmarks/precision_knn.py --steps 5 --seeds 0 --output /tmp/p   # a quick check

Writes ``benchmarks/results/precision_knn_recipes192.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_harness import PRESETS, RESULTS, environment  # noqa: E402

from lightly_graft.run.pipeline import prepare_run, run_pipeline  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")


def recipe(preset: dict, *, seed: int, precision: str, steps: int) -> dict:
    """A one-stage MoCo v3 recipe at the preset's size, kNN after its one epoch."""
    return {
        "name": f"moco-{precision}-seed{seed}",
        "seed": seed,
        "data": {
            "path": "default",
            "knn_bank_size": 5000,
            "knn_query_size": 2000,
            "num_workers": 0,
        },
        "backbone": dict(preset["backbone"]),
        "random_init_knn": False,
        "analysis": [],
        "stages": [
            {
                "name": "moco",
                "method": "grafted_moco",
                "epochs": 1,
                "limit_train_batches": steps,
                "batch_size": preset["moco_batch"],
                "precision": precision,
                "method_args": dict(preset["heads"]),
                # The recipes' MoCo v3 stage settings (recipes/mtl.yaml), with a
                # warmup short enough that the LR reaches its peak in the run.
                "optimizer": {
                    "base_lr": 1.5e-4,
                    "num_stages": 1,
                    "weight_decay": 0.1,
                    "betas": [0.9, 0.999],
                    "warmup_epochs": 0.25,
                },
                "knn": {"every_n_epochs": 1},
            }
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="recipes192", choices=PRESETS)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    top1: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for precision in PRECISIONS:
                path = Path(tmp) / f"{precision}-{seed}.yaml"
                tree = recipe(preset, seed=seed, precision=precision, steps=args.steps)
                path.write_text(yaml.safe_dump(tree))
                plan = prepare_run(path, output=Path(tmp) / path.stem)
                start = time.perf_counter()
                summary = run_pipeline(plan, progress_bar=False)
                final = summary.stages[-1].final
                assert final is not None, "the kNN monitor did not run"
                top1[precision].append(final.top1)
                seconds[precision].append(time.perf_counter() - start)
    fp32, bf16 = (statistics.mean(top1[p]) for p in PRECISIONS)
    spread = max(top1["32-true"]) - min(top1["32-true"])
    within = abs(bf16 - fp32) <= spread
    lines = [
        "# kNN accuracy, fp32 vs bf16-mixed (issue 13.3)",
        "",
        f"`python benchmarks/precision_knn.py {' '.join(sys.argv[1:])}`: "
        f"{environment()}. MoCo v3 from scratch at the `{args.preset}` size "
        f"(benchmarks/step_harness.py PRESETS), {args.steps} steps of batch "
        f"{preset['moco_batch']}, weighted kNN (k=200) of 2,000 test images "
        "against 5,000 training images after the run.",
        "",
        "| precision | "
        + " | ".join(f"seed {s}" for s in args.seeds)
        + " | mean | wall s (mean) |",
        "|---|" + "---:|" * (len(args.seeds) + 2),
    ]
    for precision in PRECISIONS:
        cells = " | ".join(f"{100 * v:.2f}" for v in top1[precision])
        lines.append(
            f"| {precision} | {cells} | {100 * statistics.mean(top1[precision]):.2f} | "
            f"{statistics.mean(seconds[precision]):.0f} |"
        )
    lines += [
        "",
        f"bf16 - fp32 (means): {100 * (bf16 - fp32):+.2f} points; seed noise (fp32 "
        f"spread over seeds): {100 * spread:.2f} points: "
        + ("**within seed noise**." if within else "**outside seed noise**."),
        "",
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"precision_knn_{args.preset}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
