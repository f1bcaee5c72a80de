"""The suite file of ``lightly-graft bench``: arms x seeds on one data set and ViT.

A suite names the data, the backbone, the stage defaults, the evaluation
protocols, the seeds, an optional LR sweep, the paper's figures and claims, and
a list of **arms**. An arm is a recipe's stages (a recipe file, or ``stages``
inline) that is run once per seed; the suite supplies everything else of the
recipe (data, backbone, seed, accelerator). Two arm keys express the budgets of
the Layer Grafted paper:

- ``graft_from: ARM``: the arm's first stage grafts from ARM's final encoder of
  the same seed (and LR scale), so step ii of Layer Grafted starts from the very
  MAE run that is also the MAE baseline (the paper's protocol, Tables 1 and 2);
  its FLOPs include ARM's.
- ``budget: {match: ARM}``: the arm's steps are scaled so that its counted
  training FLOPs equal ARM's total (matched compute).

Validated by pydantic (unknown keys, wrong types and out-of-range values are
errors); :func:`load_suite` turns pydantic's first error into one line naming the
file, the key path, the value and the valid options, worded by
:mod:`lightly_graft.recipes.validation` as every recipe error is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lightly_graft.errors import RecipeError, did_you_mean, format_options
from lightly_graft.eval.fewshot import DEFAULT_CS, DEFAULT_FRACTIONS
from lightly_graft.eval.linear import DEFAULT_LRS
from lightly_graft.recipes.validation import Invalid, first_problem
from lightly_graft.recipes.yaml_io import read_yaml

#: Metrics of one (arm, seed), in the order the table shows them.
METRICS = ("knn", "linear", "fewshot_1%", "fewshot_10%", "finetune")
Protocol = Literal["knn", "linear", "fewshot", "finetune"]
Metric = Literal["knn", "linear", "fewshot_1%", "fewshot_10%", "finetune"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KNNEval(_Model):
    k: int = Field(default=200, ge=1, description="Neighbours.")
    temperature: float = Field(default=0.1, gt=0, description="Vote temperature.")


class LinearEval(_Model):
    lrs: tuple[PositiveFloat, ...] = Field(
        default=DEFAULT_LRS,
        min_length=1,
        description="LR grid, chosen on the val split.",
    )
    epochs: int = Field(default=90, ge=1, description="SGD epochs per LR.")
    batch_size: int = Field(default=256, ge=1)


class FewshotEval(_Model):
    fractions: tuple[Annotated[float, Field(gt=0, le=1)], ...] = Field(
        default=DEFAULT_FRACTIONS, min_length=1, description="Label fractions."
    )
    cs: tuple[PositiveFloat, ...] = Field(
        default=DEFAULT_CS, min_length=1, description="C grid, chosen on the val split."
    )


class FinetuneEval(_Model):
    """Fine-tuning on a class-balanced labelled subset (the paper's 10%
    semi-supervised setting), MAE's recipe; nothing is chosen on the test set."""

    label_fraction: float = Field(default=0.1, gt=0, le=1)
    epochs: int = Field(default=10, ge=1)
    base_lr: float = Field(default=5e-4, gt=0)
    layer_decay: float = Field(default=0.6, gt=0, le=1)
    warmup_epochs: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=128, ge=1)


class Evaluation(_Model):
    protocols: tuple[Protocol, ...] = Field(
        default=("knn", "linear", "fewshot"), min_length=1
    )
    val_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Training images held out to choose the linear LR and the "
        "few-shot C; the test split is only ever reported.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the val split and subsets.")
    batch_size: int = Field(default=512, ge=1, description="Feature extraction batch.")
    train_size: int | None = Field(
        default=None,
        ge=10,
        description="Seeded subset of the training split (null: all).",
    )
    test_size: int | None = Field(
        default=None, ge=1, description="Seeded subset of the test split (null: all)."
    )
    knn: KNNEval = KNNEval()
    linear: LinearEval = LinearEval()
    fewshot: FewshotEval = FewshotEval()
    finetune: FinetuneEval = FinetuneEval()


class LRSweep(_Model):
    scales: tuple[PositiveFloat, ...] = Field(
        min_length=1, description="Factors applied to every LR of an arm's stages."
    )
    seed: int = Field(default=0, ge=0, description="The one seed the sweep runs on.")
    select_by: Metric = Field(
        default="linear", description="Validation metric that picks the scale."
    )
    arms: tuple[Name, ...] | None = Field(
        default=None,
        description="Arms that sweep (null: every arm without sweep: false).",
    )


class Budget(_Model):
    match: Name = Field(description="Arm whose total training FLOPs this arm gets.")


class Arm(_Model):
    name: Name
    title: str = ""
    paper: str = Field(
        default="", description="Where the paper has this arm (Table 1, ...)."
    )
    recipe: str | None = Field(
        default=None, description="Recipe file (relative to the suite)."
    )
    stages: tuple[dict[str, Any], ...] | None = None
    seeds: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(
        default=None, min_length=1
    )
    graft_from: Name | None = None
    scale_from: Name | None = Field(
        default=None,
        description="Use that arm's LR factor from the sweep (an ablation of it).",
    )
    budget: Budget | None = None
    sweep: bool = Field(default=True, description="Take part in the suite's LR sweep.")

    @model_validator(mode="after")
    def _one_source(self) -> Arm:
        if (self.recipe is None) == (self.stages is None):
            given = "both" if self.recipe is not None else "neither"
            raise Invalid(
                "", f"give exactly one of 'recipe' and 'stages' (got {given})"
            )
        return self


class Figures(_Model):
    gradient_conflict: tuple[Name, ...] = Field(
        default=(),
        description="Arms (MTL) whose gradient conflict per block is drawn (Fig 1).",
    )
    vic: tuple[Name, ...] = Field(default=(), description="Arms of Fig 6.")
    attention_distance: tuple[Name, ...] = Field(
        default=(), description="Arms of Fig 7."
    )
    tsne: tuple[Name, ...] = Field(default=(), description="Arms of Fig 3.")
    num_batches: int = Field(default=8, ge=1)
    batch_size: int = Field(default=64, ge=1)


class Claim(_Model):
    claim: str
    source: str = ""
    paper_values: str = Field(
        default="", description="The paper's numbers behind the claim, as text."
    )
    kind: Literal["order", "falls_with_depth"] = "order"
    metric: Metric | None = None
    order: tuple[Name, ...] = Field(
        default=(),
        description="Arms, best first ('order'); one arm ('falls_with_depth').",
    )

    @model_validator(mode="after")
    def _shape(self) -> Claim:
        if self.kind == "order" and (self.metric is None or len(self.order) < 2):
            raise Invalid("", "an 'order' claim needs a metric and at least two arms")
        if self.kind == "falls_with_depth" and len(self.order) != 1:
            raise Invalid("", "a 'falls_with_depth' claim names one arm in 'order'")
        return self


class Suite(_Model):
    name: Name
    description: str = ""
    seeds: tuple[Annotated[int, Field(ge=0)], ...] = Field(default=(0,), min_length=1)
    data: dict[str, Any] | str = "default"
    backbone: dict[str, Any] | str
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Stage keys merged into every stage (the stage's own win).",
    )
    stage_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Stage keys merged over every stage (they win): a smoke suite.",
    )
    only_seeds: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(
        default=None, description="Run only these of every arm's seeds (a smoke suite)."
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    evaluation: Evaluation = Evaluation()
    lr_sweep: LRSweep | None = None
    figures: Figures = Figures()
    claims: tuple[Claim, ...] = ()
    arms: tuple[Arm, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Suite:
        names = [arm.name for arm in self.arms]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise Invalid(f"arms[{i}].name", f"'{name}' is used by an earlier arm")
        for i, arm in enumerate(self.arms):
            budget = arm.budget.match if arm.budget is not None else None
            refs = (
                ("graft_from", arm.graft_from),
                ("budget.match", budget),
                ("scale_from", arm.scale_from),
            )
            for key, ref in refs:
                if ref is not None and ref not in names:
                    raise Invalid(f"arms[{i}].{key}", _unknown_arm(ref, names))
                if ref == arm.name:
                    raise Invalid(f"arms[{i}].{key}", "an arm cannot refer to itself")
        for field_name in ("gradient_conflict", "vic", "attention_distance", "tsne"):
            for j, ref in enumerate(getattr(self.figures, field_name)):
                if ref not in names:
                    raise Invalid(
                        f"figures.{field_name}[{j}]", _unknown_arm(ref, names)
                    )
        for j, ref in enumerate(self.lr_sweep.arms or () if self.lr_sweep else ()):
            if ref not in names:
                raise Invalid(f"lr_sweep.arms[{j}]", _unknown_arm(ref, names))
        for i, claim in enumerate(self.claims):
            for j, ref in enumerate(claim.order):
                if ref not in names:
                    raise Invalid(f"claims[{i}].order[{j}]", _unknown_arm(ref, names))
        for i, arm in enumerate(self.arms):
            _check_acyclic(self, arm.name, [], i)
        return self

    def arm(self, name: str) -> Arm:
        return next(arm for arm in self.arms if arm.name == name)

    def seeds_of(self, arm: Arm) -> tuple[int, ...]:
        seeds = arm.seeds if arm.seeds is not None else self.seeds
        if self.only_seeds is not None:
            seeds = tuple(s for s in seeds if s in self.only_seeds)
        return seeds

    def sweeps(self, arm: Arm) -> bool:
        sweep = self.lr_sweep
        if sweep is None or not arm.sweep:
            return False
        return sweep.arms is None or arm.name in sweep.arms


def _unknown_arm(ref: str, names: list[str]) -> str:
    return f"'{ref}' is not an arm{did_you_mean(ref, names)}; arms: {format_options(names)}"


def _check_acyclic(suite: Suite, name: str, seen: list[str], index: int) -> None:
    if name in seen:
        chain = " -> ".join([*seen, name])
        raise Invalid(
            f"arms[{index}]", f"arms depend on each other in a cycle: {chain}"
        )
    arm = suite.arm(name)
    for ref in _refs(arm):
        if ref is not None:
            _check_acyclic(suite, ref, [*seen, name], index)


def _refs(arm: Arm) -> list[str]:
    """The arms an arm names (graft_from, budget.match, scale_from)."""
    refs = [arm.graft_from, arm.budget.match if arm.budget else None, arm.scale_from]
    return [r for r in refs if r is not None]


def dependencies(suite: Suite, arm: Arm) -> list[str]:
    """Arms that must finish (same seed) before ``arm`` can run, nearest first."""
    out: list[str] = []
    for ref in _refs(arm):
        if ref is not None:
            for name in [ref, *dependencies(suite, suite.arm(ref))]:
                if name not in out:
                    out.append(name)
    return out


def suite_from_tree(tree: Any, *, source: str) -> Suite:
    """Validates a parsed suite (a mapping); errors name ``source`` and the key."""
    if not isinstance(tree, dict):
        raise RecipeError(
            f"{source}: expected a mapping with name, backbone, arms, ...; got "
            f"{type(tree).__name__}"
        )
    try:
        return Suite.model_validate(tree)
    except ValidationError as error:
        raise RecipeError(f"{source}: {first_problem(error, Suite)}") from None


def read_suite_tree(path: str | Path, *, _seen: tuple[Path, ...] = ()) -> Any:
    """The parsed suite file, with ``extends: BASE.yaml`` (relative to the file)
    merged under it: mappings merge key by key, anything else (lists, values)
    is replaced. Arm ``recipe`` paths are made relative to the file naming them."""
    path = Path(path)
    tree = read_yaml(path)
    if isinstance(tree, dict):
        for arm in tree.get("arms") or []:
            if isinstance(arm, dict) and isinstance(arm.get("recipe"), str):
                arm["recipe"] = str((path.parent / arm["recipe"]).resolve())
    if not isinstance(tree, dict) or "extends" not in tree:
        return tree
    base_name = tree.pop("extends")
    base = (path.parent / str(base_name)).resolve()
    if base in _seen or base == path.resolve():
        raise RecipeError(f"suite '{path}': extends: '{base_name}' extends itself")
    if not base.is_file():
        raise RecipeError(
            f"suite '{path}': extends: '{base_name}' does not exist (looked for "
            f"{base}); the path is relative to the suite file"
        )
    return _merge_trees(read_suite_tree(base, _seen=(*_seen, path.resolve())), tree)


def _merge_trees(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge_trees(base[key], value) if key in base else value
        return out
    return over


def load_suite(path: str | Path) -> Suite:
    """Loads and validates a suite file (duplicate keys refused, like recipes).

    Raises:
        RecipeError: The file is missing or invalid; one line naming the file, the
            key path, the value given and the valid options.
    """
    return suite_from_tree(read_suite_tree(path), source=f"suite '{path}'")
