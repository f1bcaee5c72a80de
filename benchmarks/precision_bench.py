"""fp32 against bf16-mixed training steps for each shipped recipe's model size.

Issue 13.3. Our full Lightning step (benchmarks/step_harness.py), the same module
built twice, ``precision="32-true"`` against ``"bf16-mixed"`` (CPU autocast to
bfloat16; this CPU has AVX512-BF16), paired round by round, for MoCo v3
(``GraftedMoCo``) and MAE at each preset:

- ``quickstart``: recipes/quickstart.yaml (28 px, patch 7, width 64, depth 6);
- ``recipes192``: the other recipes/*.yaml (32 px, patch 4, width 192, depth 6,
  1024-wide heads, decoder 128 x 2);
- ``vitb16``: recipes/paper/*.yaml ViT-B/16 (batch 4 here: only the ratio counts;
  the ViT-L/16 recipe is not timed on a CPU).

A ratio fp32 / bf16 above 1 means bf16 is faster. Speed alone does not decide a
recipe: the kNN accuracy of a bf16 run must stay within seed noise of the fp32
runs (docs: the commands in README "Benchmarks").

Usage::

    python benchmarks/precision_bench.py --presets quickstart     # one preset a run
    python benchmarks/precision_bench.py --presets quickstart --rounds 1 --steps 2 \\
        --warmup 1 --output /tmp/p                                # a quick check

Writes ``benchmarks/results/precision_<presets>.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead_bench import ours_mae, ours_moco  # noqa: E402
from step_harness import PRESETS, RESULTS, TABLE_HEAD, environment, paired  # noqa: E402

# Steps per round by preset: a ViT-B/16 step takes seconds on a CPU.
STEPS = {"quickstart": (5, 2, 15), "recipes192": (3, 2, 6), "vitb16": (2, 1, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--methods", nargs="+", default=["moco", "mae"])
    parser.add_argument("--rounds", type=int, help="default: per preset")
    parser.add_argument("--steps", type=int, help="default: per preset")
    parser.add_argument("--warmup", type=int, help="default: per preset")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            preset = PRESETS[name]
            rounds, warmup, steps = STEPS[name]
            common = dict(
                rounds=args.rounds or rounds,
                warmup=args.warmup if args.warmup is not None else warmup,
                steps=args.steps or steps,
            )
            builders = {"moco": ours_moco, "mae": ours_mae}
            for method in args.methods:
                workdir = Path(tmp) / f"{name}-{method}"
                workdir.mkdir()
                side = builders[method](preset, workdir)
                pair = paired(
                    f"{method} @ {name}",
                    ("fp32 (32-true)", side, "32-true"),
                    ("bf16-mixed", side, "bf16-mixed"),
                    **common,
                )
                rows.append((pair, common))
    lines = [
        "# fp32 vs bf16-mixed training steps (issue 13.3)",
        "",
        f"`python benchmarks/precision_bench.py {' '.join(sys.argv[1:])}`: "
        f"{environment()}. Presets: benchmarks/step_harness.py PRESETS. A / B > 1: "
        "bf16 is faster. Rounds alternate which side goes first.",
        "",
        TABLE_HEAD,
        *[pair.row() for pair, _ in rows],
        "",
        "Rounds x (warm-up + timed steps): "
        + "; ".join(
            f"{p.name} {c['rounds']} x ({c['warmup']} + {c['steps']})" for p, c in rows
        )
        + ".",
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    name = "precision_" + "_".join(args.presets) + ".md"  # one file per preset set
    (args.output / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
