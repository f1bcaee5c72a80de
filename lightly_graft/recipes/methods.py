"""Checks of each stage's ``method`` and ``method_args`` against the zoo.

``method`` must be a registered zoo name; ``method_args`` keys must be fields of
the entry's ``config_cls`` (the constructor's keyword arguments) with values of
the annotated types. The arguments the recipe sets elsewhere (``backbone``,
``optimizer``, ``batch_size_per_device``, ``num_classes``) are refused here with
a pointer to the recipe key that sets them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lightly_graft import zoo
from lightly_graft.errors import GraftError, did_you_mean, format_options
from lightly_graft.recipes.schema import Recipe
from lightly_graft.recipes.typed import Invalid, convert, join

#: Constructor arguments set by other recipe keys, and which.
SET_BY_RECIPE = {
    "backbone": "the recipe's `backbone` section",
    "optimizer": "the stage's `optimizer` section",
    "batch_size_per_device": "the stage's `batch_size`",
    "num_classes": "the pipeline (from the data)",
    "grafting": "the stage's `graft` section",
}


def check_method_args(method: str, args: dict[str, Any], path: str) -> None:
    """Raises :class:`Invalid` at ``path`` (``stages[i]``) for a bad method or args."""
    try:
        entry = zoo.get(method)
    except GraftError as error:
        raise Invalid(join(path, "method"), str(error).rstrip(".")) from None
    fields = {f.name: f for f in dataclasses.fields(entry.config_cls)}
    hints = typing.get_type_hints(entry.config_cls)
    allowed = sorted(k for k in fields if k not in SET_BY_RECIPE)
    for key, value in args.items():
        where = join(join(path, "method_args"), key)
        if key in SET_BY_RECIPE:
            raise Invalid(where, f"is set by {SET_BY_RECIPE[key]}, not in method_args")
        if key not in fields:
            raise Invalid(
                where,
                f"'{method}' has no argument '{key}'; its arguments: "
                f"{format_options(allowed)}" + did_you_mean(key, allowed),
            )
        convert(hints.get(key, Any), value, where)


def check_methods(recipe: Recipe) -> None:
    """Checks every stage's method and method_args; raises :class:`Invalid`."""
    for i, stage in enumerate(recipe.stages):
        check_method_args(stage.method, stage.method_args, f"stages[{i}]")
