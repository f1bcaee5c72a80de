"""A bench directory (layout in :mod:`.runner`): paths, recipes of its jobs,
counted FLOPs and budgets, resume checks (training and evaluating one job:
:mod:`.jobs`)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightly_graft.bench.arms import Job, scale_lrs
from lightly_graft.bench.budget import StageCost, count_stage, match_steps, total_flops
from lightly_graft.bench.suite import Arm, Suite
from lightly_graft.errors import GraftError, RecipeError
from lightly_graft.files import write_atomic
from lightly_graft.recipes.loader import recipe_from_tree
from lightly_graft.recipes.yaml_io import dump_yaml, read_yaml
from lightly_graft.run.lock import LOCK
from lightly_graft.run.run_dir import differing_keys, shown_keys

SUITE = "suite.yaml"


class BenchExistsError(GraftError):
    """The bench directory exists and resuming was not asked for, or cannot be."""


@dataclass
class Bench:
    """A suite and its bench directory (see the module docstring)."""

    suite: Suite
    source: str
    stages: dict[str, list[dict[str, Any]]]
    root: Path
    progress_bar: bool = False
    costs: dict[str, Any] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    _session: list[tuple[float, float]] = field(default_factory=list)

    # --- paths ---------------------------------------------------------------

    def run_dir(self, job: Job) -> Path:
        return self.root / "runs" / job.key / f"seed{job.seed}"

    def result_path(self, job: Job) -> Path:
        return self.root / "results" / job.key / f"seed{job.seed}.json"

    def result(self, job: Job) -> dict[str, Any] | None:
        path = self.result_path(job)
        return json.loads(path.read_text()) if path.is_file() else None

    # --- recipes -------------------------------------------------------------

    def base_tree(
        self, arm: Arm, seed: int, stages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        suite = self.suite
        data = suite.data if isinstance(suite.data, dict) else {"path": suite.data}
        return {
            "name": f"{arm.name}-seed{seed}",
            "description": arm.title or arm.name,
            "seed": seed,
            "data": copy.deepcopy(data),
            "backbone": copy.deepcopy(suite.backbone),
            "accelerator": suite.accelerator,
            "random_init_knn": False,
            "analysis": [],
            "stages": copy.deepcopy(stages),
        }

    def check(self) -> None:
        """Validates every arm's recipe (as `train` would) before anything runs."""
        for arm in self.suite.arms:
            stages = self.stages[arm.name]
            if arm.graft_from is not None:
                stages = self._graft_stage0(
                    stages, Path("/checkpoint/of/graft_from"), arm
                )
            where = f"{self.source}: arm '{arm.name}'"
            scaled = [scale_lrs(stages, x, where=where) for x in self.sweep_scales(arm)]
            for stages_at_scale in scaled:
                recipe_from_tree(self.base_tree(arm, 0, stages_at_scale), source=where)

    def _graft_stage0(
        self, stages: list[dict[str, Any]], checkpoint: Path, arm: Arm
    ) -> list[dict[str, Any]]:
        first = dict(stages[0])
        graft = first.get("graft")
        graft = {} if graft is None else dict(graft)
        if "from" in graft or "checkpoint" in graft:
            raise RecipeError(
                f"{self.source}: arm '{arm.name}': its first stage grafts from arm "
                f"'{arm.graft_from}' (graft_from), so its graft section may not "
                "name 'from' or 'checkpoint'"
            )
        first["graft"] = {
            **graft,
            "checkpoint": str(checkpoint),
            "format": "lightly_graft",
        }
        return [first, *stages[1:]]

    def sweep_scales(self, arm: Arm) -> tuple[float, ...]:
        sweep = self.suite.lr_sweep
        return sweep.scales if sweep is not None and self.suite.sweeps(arm) else (1.0,)

    def scale_of(self, arm: Arm) -> float:
        """The arm's LR scale: the sweep's choice (its own or its scale_from
        arm's), or 1."""
        if arm.scale_from is not None and len(self.sweep_scales(arm)) == 1:
            return self.scale_of(self.suite.arm(arm.scale_from))
        if len(self.sweep_scales(arm)) == 1:
            return self.sweep_scales(arm)[0]
        if arm.name not in self.chosen:
            raise RuntimeError(f"the LR sweep of arm '{arm.name}' has not finished")
        return self.chosen[arm.name]

    def tree(self, job: Job) -> dict[str, Any]:
        """The recipe of a job, budgets applied and grafts resolved."""
        arm = self.suite.arm(job.arm)
        where = f"{self.source}: arm '{arm.name}'"
        stages = scale_lrs(self.stages[arm.name], job.scale, where=where)
        if arm.budget is not None:
            stages = match_steps(
                stages,
                self.stage_costs(arm),
                self.arm_flops(self.suite.arm(arm.budget.match))
                - self.step_i_flops(arm),
            )
        if arm.graft_from is not None:
            source = self.suite.arm(arm.graft_from)
            dep = Job(source.name, job.seed, self.scale_of(source))
            last = self.tree(dep)["stages"][-1]["name"]
            stages = self._graft_stage0(
                stages, self.run_dir(dep) / last / "encoder.pt", arm
            )
        return self.base_tree(arm, job.seed, stages)

    # --- FLOPs ---------------------------------------------------------------

    def stage_costs(self, arm: Arm) -> list[StageCost]:
        """Counted cost of each of the arm's stages (cached in costs.json)."""
        stages = self.stages[arm.name]
        out = []
        for index, stage in enumerate(stages):
            # What decides the work of a step: everything but the step count,
            # the LRs, the graft and the monitor (frozen stages do count).
            ignored = (
                "epochs",
                "limit_train_batches",
                "knn",
                "optimizer",
                "graft",
                "anchor",
            )
            counted = {k: v for k, v in stage.items() if k not in ignored}
            optimizer = stage.get("optimizer") or {}
            counted["frozen"] = [
                optimizer.get("num_stages"),
                optimizer.get("frozen_stages"),
            ]
            spec = [
                counted,
                self.suite.data,
                self.suite.backbone,
                self.suite.accelerator,
            ]
            key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[
                :16
            ]
            if key not in self.costs:
                tree = self.base_tree(arm, 0, stages)
                cost = count_stage(
                    tree, index, source=f"{self.source}: arm '{arm.name}'"
                )
                self.costs[key] = {
                    "flops_per_step": cost.flops_per_step,
                    "full_epoch_batches": cost.full_epoch_batches,
                    "arm": arm.name,
                    "stage": stage.get("name"),
                }
                write_atomic(
                    self.root / "costs.json", json.dumps(self.costs, indent=1) + "\n"
                )
            saved = self.costs[key]
            out.append(StageCost(saved["flops_per_step"], saved["full_epoch_batches"]))
        return out

    def own_stages(self, arm: Arm) -> list[dict[str, Any]]:
        """The arm's stages with its budget applied (no LR scaling, no graft)."""
        stages = self.stages[arm.name]
        if arm.budget is None:
            return stages
        target = self.arm_flops(self.suite.arm(arm.budget.match)) - self.step_i_flops(
            arm
        )
        return match_steps(stages, self.stage_costs(arm), target)

    def step_i_flops(self, arm: Arm) -> int:
        """FLOPs of the arm it grafts from (its step i), 0 if none."""
        return self.arm_flops(self.suite.arm(arm.graft_from)) if arm.graft_from else 0

    def arm_flops(self, arm: Arm) -> int:
        """Total training FLOPs of an arm, its step i (graft_from) included."""
        return sum(
            total_flops(self.own_stages(arm), self.stage_costs(arm))
        ) + self.step_i_flops(arm)

    # --- running -------------------------------------------------------------

    def has_runs(self, arm: str) -> bool:
        """Whether any run of ``arm`` (any LR factor) has started."""
        runs = self.root / "runs"
        return any(runs.glob(f"{arm}/seed*")) or any(runs.glob(f"{arm}@lr*/seed*"))

    def _save_determining(self, plain: dict[str, Any]) -> None:
        write_atomic(
            self.root / SUITE,
            dump_yaml(
                plain,
                header="What decides the results of `lightly-graft bench`; "
                "compared on --resume.",
            ),
        )

    def determining(self) -> dict[str, Any]:
        """What decides the results (compared on --resume): the data, backbone,
        evaluation and sweep, and every arm's resolved stages and budget; not
        the seeds, titles, figures or claims, which may change between runs."""
        suite = self.suite.model_dump(mode="json")
        common = ("data", "backbone", "accelerator", "evaluation", "lr_sweep")
        arms = {
            arm.name: {
                "stages": self.stages[arm.name],
                "graft_from": arm.graft_from,
                "budget": suite["arms"][i]["budget"],
                "sweep": self.suite.sweeps(arm),
            }
            for i, arm in enumerate(self.suite.arms)
        }
        plain = {"suite": {k: suite[k] for k in common}, "arms": arms}
        return json.loads(json.dumps(plain))

    def prepare(self, *, resume: bool) -> None:
        """Creates the bench directory or checks that it may be resumed."""
        plain = self.determining()
        saved_path = self.root / SUITE
        if saved_path.is_file():
            if not resume:
                raise BenchExistsError(
                    f"bench directory '{self.root}' exists (from an earlier bench of "
                    "this suite): add --resume to continue it, or give another "
                    "--output"
                )
            saved = read_yaml(saved_path)
            # An arm that has not run yet (or was added since) may change: only
            # the arms with runs, and what every arm shares, must be the same.
            started = {
                name: arm
                for name, arm in saved.get("arms", {}).items()
                if name in plain["arms"] and self.has_runs(name)
            }
            kept = {name: plain["arms"][name] for name in started}
            differ = differing_keys({**saved, "arms": started}, {**plain, "arms": kept})
            if differ:
                shown = shown_keys(differ, most=5)
                raise BenchExistsError(
                    f"cannot resume '{self.root}': the suite differs from the one it "
                    f"was started with at {shown}; undo the change, or give another "
                    "--output for the changed suite"
                )
            if plain != saved:  # arms not yet run changed or were added
                self._save_determining(plain)
        elif self.root.exists() and any(p.name != LOCK for p in self.root.iterdir()):
            raise BenchExistsError(
                f"'{self.root}' exists and is not a bench directory (no {SUITE}): "
                "give another --output"
            )
        else:
            self._save_determining(plain)
        costs = self.root / "costs.json"
        if costs.is_file():
            self.costs = json.loads(costs.read_text())
