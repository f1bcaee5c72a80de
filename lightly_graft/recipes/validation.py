"""pydantic's validation errors as one-line recipe messages.

pydantic checks the recipe (types, ranges, unknown keys); this module only
words its first error the way the CLI reports every recipe problem: the key
path (``stages[1].optimizer.stage_lrs``), the value received with its YAML type,
and the valid options or keys with a did-you-mean. :class:`Invalid` is a problem
at a key path: found beyond the schema (the zoo, timm), or raised by a model
validator about a key below its model.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from lightly_graft.errors import did_you_mean, format_options

#: Every recipe model: unknown keys are errors, instances are immutable, and
#: values are not coerced (``"5"`` is not an int, ``true`` is not 1). YAML lists
#: reach the models as tuples (:func:`as_tuples`), as strict tuples need.
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class Invalid(ValueError):
    """A value that does not fit, at a key path (in a model validator: the path
    below the model)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path and key else path or key


def as_tuples(tree: Any) -> Any:
    """A YAML tree with every list as a tuple."""
    return _sequences(tree, tuple)


def as_lists(tree: Any) -> Any:
    """The inverse of :func:`as_tuples`: plain YAML-able data."""
    return _sequences(tree, list)


def _sequences(tree: Any, kind: type) -> Any:
    if isinstance(tree, Mapping):
        return {k: _sequences(v, kind) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return kind(_sequences(v, kind) for v in tree)
    return tree


YAML_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def describe(value: Any) -> str:
    """A short rendering of a received value and its YAML type."""
    value = as_lists(value)
    kind = {**YAML_TYPES, list: "list", dict: "mapping", type(None): "null"}.get(
        type(value), type(value).__name__
    )
    text = repr(value)
    return f"{text[:57] + '...' if len(text) > 60 else text} ({kind})"


# pydantic error types (``int_type``, ``float_parsing``, ...) by their stem.
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "string": "a string",
    "tuple": "a list",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _is_tag(part: str | int) -> bool:
    # pydantic names the failed member of a union in the location ("int",
    # "constrained-int", "tuple[float, ...]", "GraftConfig"): not a key.
    return isinstance(part, str) and (
        part in _EXPECTED
        or part in ("str", "none")
        or "[" in part
        or "-" in part
        or part[0].isupper()
    )


def key_path(loc: Iterable[str | int], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        path = path if _is_tag(part) else join(path, part)
    return path


def keys_of(model: type[BaseModel]) -> dict[str, str]:
    """YAML key -> field name of a model (keys are the aliases, e.g. ``from``)."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def section_at(model: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel]:
    """The model of the section at an error location below ``model``."""
    for part in loc:
        if isinstance(part, int) or _is_tag(part):
            continue
        field = model.model_fields.get(keys_of(model).get(part, part))
        inner = models_in(field.annotation) if field is not None else []
        if not inner:
            break
        model = inner[0]
    return model


def explain(error: ErrorDetails, model: type[BaseModel], prefix: str = "") -> Invalid:
    """One error of validating ``model`` (at ``prefix``) as an :class:`Invalid`."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    path, ctx = key_path(loc, prefix), error.get("ctx") or {}
    section = section_at(model, loc[:-1])
    if kind == "extra_forbidden":
        valid = sorted(keys_of(section))
        message = f"unknown key; valid keys here: {format_options(valid)}"
        return Invalid(path, message + did_you_mean(str(loc[-1]), valid))
    if kind == "missing" and isinstance(loc[-1], int):  # a fixed-length list
        return Invalid(path.rpartition("[")[0], f"too few values: {describe(value)}")
    if kind == "missing":
        field = section.model_fields.get(keys_of(section).get(str(loc[-1]), ""))
        doc = f" ({field.description})" if field and field.description else ""
        return Invalid(path, f"missing; it is required{doc}")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")
        options = [o.strip("'") for o in expected]
        return Invalid(
            path,
            f"got {describe(value)}; valid options: {format_options(options)}"
            + did_you_mean(str(value), options),
        )
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return Invalid(path, f"got {describe(value)}: must be {_BOUNDS[kind]} {bound}")
    if kind == "too_long":
        return Invalid(
            path, f"expected {ctx['max_length']} values, got {describe(value)}"
        )
    if kind == "value_error" and isinstance(ctx.get("error"), Invalid):
        return Invalid(join(path, ctx["error"].path), ctx["error"].message)
    if kind == "value_error":
        return Invalid(path, f"got {describe(value)}: {ctx.get('error')}")
    stem = kind.rpartition("_")[0].removesuffix("_from")
    if stem in _EXPECTED:
        return Invalid(path, f"expected {_EXPECTED[stem]}, got {describe(value)}")
    return Invalid(path, f"got {describe(value)}: {error['msg']}")


def first_problem(
    error: ValidationError, model: type[BaseModel], prefix: str = ""
) -> Invalid:
    """The first problem of a ``ValidationError``; the failed members of a union
    at one key path are reported together ("expected an integer or a number")."""
    problems = [explain(e, model, prefix) for e in error.errors()]
    first = problems[0]
    alike = [
        p.message.split(", got ")[0].removeprefix("expected ")
        for p in problems
        if p.path == first.path and p.message.startswith("expected ")
    ]
    if len(alike) > 1 and first.message.startswith("expected "):
        got = first.message.split(", got ", 1)[1]
        return Invalid(first.path, f"expected {' or '.join(alike)}, got {got}")
    return first
