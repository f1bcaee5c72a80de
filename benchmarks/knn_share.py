"""The kNN monitor's share of a training run, measured on a real run (issue 13.2).

Trains ``recipes/quickstart.yaml`` as ``lightly-graft train`` does (or reads a
finished run with ``--run DIR``) and, per stage, divides the seconds of the kNN
evaluations (``knn/seconds`` in the stage's ``metrics.csv``: embedding the bank
and the queries plus the search) by the stage's wall time (``done.json``: every
step, the views, logging, checkpoints and the evaluations themselves).

The cost of one evaluation is fixed by the sets (the ViT forward of every bank
and query image); the share is set by how often it runs. The table also gives
the share the same run would have with an evaluation after every epoch,
computed from the measured mean cost of one evaluation:
``mean * epochs / (stage seconds - kNN seconds + mean * epochs)``.

Usage::

    python benchmarks/knn_share.py                 # trains the quickstart (~4 min)
    python benchmarks/knn_share.py --run runs/quickstart

Writes ``benchmarks/results/knn_share.md``. Target: at most 3% per stage.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_harness import RESULTS, environment  # noqa: E402

from lightly_graft.recipes import load_recipe  # noqa: E402
from lightly_graft.run.pipeline import prepare_run, run_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"


def stage_row(stage_dir: Path, epochs: int) -> tuple[str, float]:
    """A table row of one finished stage and its share of kNN time."""
    seconds = []
    for path in sorted(stage_dir.glob("metrics*.csv")):
        with path.open(newline="") as f:
            seconds += [float(r["knn/seconds"]) for r in csv.DictReader(f) if r.get("knn/seconds")]  # fmt: skip
    stage = float(json.loads((stage_dir / "done.json").read_text())["seconds"])
    knn = sum(seconds)
    mean = knn / len(seconds) if seconds else 0.0
    every = mean * epochs / (stage - knn + mean * epochs) if seconds else 0.0
    row = (
        f"| {stage_dir.name} | {epochs} | {len(seconds)} | {mean:.2f} | {knn:.1f} | "
        f"{stage:.1f} | **{knn / stage:.1%}** | {every:.1%} |"
    )
    return row, knn / stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run of the recipe")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "quickstart"
            run_pipeline(prepare_run(RECIPE, output=run), progress_bar=False)
        recipe = load_recipe(run / "recipe.yaml")  # the settings the run used
        rows = [stage_row(run / s.name, s.epochs) for s in recipe.stages]
    knn = recipe.stages[-1].knn
    lines = [
        "# kNN monitor's share of a training run (quickstart)",
        "",
        f"`python benchmarks/knn_share.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f": {environment()}; run `{recipe.name}` (bank "
        f"{recipe.data.knn_bank_size}, {recipe.data.knn_query_size} queries, "
        f"k={knn.k}; every_n_epochs "
        + ", ".join(f"{s.name} {s.knn.every_n_epochs}" for s in recipe.stages)
        + "). Share = seconds of the stage's kNN evaluations / the stage's wall "
        "time; the last column is the same run with an evaluation after every "
        "epoch (from the mean cost of one). The random-init floor (one more "
        "evaluation before stage 0) is not in either stage. Target: at most 3%.",
        "",
        "| stage | epochs | evaluations | s per evaluation | kNN s | stage s | share "
        "| share, every epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[row for row, _ in rows],
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "knn_share.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
