"""A stage's method, its ``method_args`` and its optimizer, against the zoo.

``method_args`` is validated by a model of the constructor's signature; the
arguments other recipe keys set are refused, naming that key. The optimizer
section is laid over the method's ``default_optimizer()``. Checks the types
cannot express stay in the constructors (the run builds each method on meta).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from pydantic import BaseModel, ValidationError

from lightly_graft import zoo
from lightly_graft.errors import GraftError, did_you_mean, format_options
from lightly_graft.recipes.library import signature_model
from lightly_graft.recipes.schema import Recipe, StageConfig
from lightly_graft.recipes.validation import Invalid, first_problem, join
from lightly_graft.training.optimizer import GraftedStageOptimizer

#: Constructor arguments set by other recipe keys, and which.
SET_BY_RECIPE = {
    "backbone": "the recipe's `backbone` section",
    "optimizer": "the stage's `optimizer` section",
    "batch_size_per_device": "the stage's `batch_size`",
    "num_classes": "the pipeline (from the data)",
    "grafting": "the stage's `graft` section",
}
_OPTIMIZER = signature_model(GraftedStageOptimizer, name="GraftedStageOptimizer")


@functools.cache
def method_args_model(method: str) -> type[BaseModel]:
    """The strict model of a zoo method's constructor arguments."""
    entry = zoo.get(method)  # its config_cls: the constructor's signature
    name = f"{entry.cls.__name__}Args"
    return signature_model(entry.config_cls, name=name, exclude=SET_BY_RECIPE)


def _entry(stage: StageConfig, path: str) -> zoo.ZooEntry:
    try:
        return zoo.get(stage.method)
    except GraftError as error:
        raise Invalid(join(path, "method"), str(error).rstrip(".")) from None


def method_args(stage: StageConfig, path: str = "") -> dict[str, Any]:
    """Every constructor argument of the stage's method: the recipe's
    ``method_args`` over the constructor's defaults. Raises :class:`Invalid`."""
    entry = _entry(stage, path)
    where = join(path, "method_args")
    model = method_args_model(entry.name)
    for key in stage.method_args:
        if key in SET_BY_RECIPE:
            raise Invalid(
                join(where, key), f"is set by {SET_BY_RECIPE[key]}, not in method_args"
            )
        if key not in model.model_fields:
            allowed = sorted(model.model_fields)
            raise Invalid(
                join(where, key),
                f"'{entry.name}' has no argument '{key}'; its arguments: "
                f"{format_options(allowed)}" + did_you_mean(key, allowed),
            )
    try:
        return model.model_validate(stage.method_args).model_dump()
    except ValidationError as error:
        raise first_problem(error, model, where) from None


def stage_optimizer(stage: StageConfig, path: str = "") -> GraftedStageOptimizer:
    """The stage's :class:`GraftedStageOptimizer`: its ``optimizer`` keys over
    the method's ``default_optimizer()``. ``base_lr`` and ``stage_lrs`` are
    alternatives: giving one replaces the default's other. Raises
    :class:`Invalid`."""
    method: Any = _entry(stage, path).cls
    default = method.default_optimizer()
    where = join(path, "optimizer")
    given = stage.optimizer.model_dump(exclude_unset=True)
    if given.get("base_lr") is not None and given.get("stage_lrs") is not None:
        raise Invalid(where, "give exactly one of base_lr and stage_lrs (got both)")
    values = dataclasses.asdict(default)
    if given.get("base_lr") is not None:
        values["stage_lrs"] = None
    if given.get("stage_lrs") is not None:
        given.pop("base_lr", None)  # unused beside stage LRs
    values.update(given)
    try:
        checked = _OPTIMIZER.model_validate(values).model_dump()
    except ValidationError as error:
        raise first_problem(error, _OPTIMIZER, where) from None
    try:
        return GraftedStageOptimizer(**checked)
    except ValueError as error:
        # Its messages begin with the field they are about ("stage_lrs has 2
        # values but ..."): that field is the key path.
        key, _, rest = str(error).rstrip(".").partition(" ")
        if key in checked:
            raise Invalid(join(where, key), rest) from None
        raise Invalid(where, str(error).rstrip(".")) from None


def check_methods(recipe: Recipe) -> None:
    """Checks every stage's method, method_args and optimizer; raises
    :class:`Invalid`."""
    for i, stage in enumerate(recipe.stages):
        method_args(stage, f"stages[{i}]")
        stage_optimizer(stage, f"stages[{i}]")
        cls = zoo.get(stage.method).cls
        if stage.gradient_conflict is not None and not hasattr(cls, "loss_terms"):
            with_both = [e.name for e in zoo.entries() if hasattr(e.cls, "loss_terms")]
            raise Invalid(
                f"stages[{i}].gradient_conflict",
                f"method '{stage.method}' has no MIM and CL losses to compare; "
                f"methods that have: {format_options(with_both)} (or remove the key)",
            )
