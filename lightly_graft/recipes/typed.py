"""Strict conversion between plain YAML trees and frozen, typed dataclasses.

``build(cls, raw)`` turns a mapping into ``cls``: every key must be a field (or a
field's ``key`` alias), every value must match the field's type hint, and every
``check`` in a field's metadata and the class's ``problems()`` hook must pass.
The first problem raises :class:`Invalid` with the key path
(``stages[1].optimizer.stage_lrs``) and a message naming the value given and the
valid options; the recipe loader adds the file name.

Supported hints: ``int``, ``float`` (an int is accepted), ``bool``, ``str``,
``Literal[...]``, ``X | None``, unions of those, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict``/``Mapping``, ``list``/``Sequence``, ``Any``, nested dataclasses and
other classes (an ``isinstance`` check); other typing constructs are not checked. Written here because neither
dataclasses nor PyYAML check types, and the structured configs of OmegaConf
(pulled in by lightly) support neither ``Literal`` types nor unions that contain
a dataclass, and their errors do not name the recipe file.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightly_graft.errors import did_you_mean, format_options

Check = Callable[[Any], "str | None"]


class Invalid(Exception):
    """A value that does not fit the schema, at a key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def option(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    check: Check | None = None,
    key: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its documentation, value check and YAML key."""
    metadata = {"doc": doc, "check": check, "key": key}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def yaml_key(field: dataclasses.Field) -> str:
    return field.metadata.get("key") or field.name


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(value: Any) -> str:
    """A short rendering of a received value and its YAML type."""
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def type_name(tp: Any) -> str:
    """A user-facing name of a type hint ('a float', 'one of ...')."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if origin is typing.Literal:
        return "one of " + format_options(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(names)
        return text + (" or null" if type(None) in typing.get_args(tp) else "")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(map(type_name, args))})"
    if origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    name = type_name(tp)
    for article in ("a ", "an "):
        if name.startswith(article) and " or " not in name:
            return name[len(article) :] + "s"
    return f"values ({name})"


def convert(tp: Any, value: Any, path: str) -> Any:
    """Checks ``value`` against the hint ``tp`` and returns it converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(tp, value, path)
    if origin is typing.Literal:
        options = typing.get_args(tp)
        if value in options and type(value) in {type(o) for o in options}:
            return value
        # `precision: 32` means the option "32": YAML reads it as a number.
        if isinstance(value, int | float) and not isinstance(value, bool):
            if str(value) in options:
                return str(value)
        text = [str(o) for o in options]
        raise Invalid(
            path,
            f"got {describe(value)}; valid options: {format_options(text)}"
            + did_you_mean(str(value), text),
        )
    if origin is tuple:
        return _convert_tuple(tp, value, path)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise Invalid(path, f"expected a mapping, got {describe(value)}")
        return dict(value)
    if origin in (list, Sequence):
        if not isinstance(value, list | tuple):
            raise Invalid(path, f"expected a list, got {describe(value)}")
        (item,) = typing.get_args(tp) or (Any,)
        return [convert(item, v, join(path, i)) for i, v in enumerate(value)]
    if tp in (bool, int, float, str):
        return _convert_scalar(tp, value, path)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise Invalid(path, f"expected {type_name(tp)}, got {describe(value)}")
    return value  # a typing construct this checker does not know: taken as given


def _convert_scalar(tp: type, value: Any, path: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise Invalid(path, f"expected {type_name(tp)}, got {describe(value)}")


def _convert_union(tp: Any, value: Any, path: str) -> Any:
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise Invalid(path, f"expected {type_name(tp)}, got null")
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return convert(arg, value, path)
        except Invalid as error:
            errors.append(error)
    # A mapping given where a dataclass is allowed: report its inner problem.
    nested = [e for e in errors if e.path != path]
    if nested:
        raise nested[0]
    raise Invalid(path, f"expected {type_name(tp)}, got {describe(value)}")


def _convert_tuple(tp: Any, value: Any, path: str) -> tuple:
    args = typing.get_args(tp)
    if not isinstance(value, list | tuple):
        raise Invalid(path, f"expected {type_name(tp)}, got {describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, join(path, i)) for i, v in enumerate(value))
    if len(value) != len(args):
        raise Invalid(
            path, f"expected {type_name(tp)}, got {len(value)}: {describe(list(value))}"
        )
    return tuple(
        convert(a, v, join(path, i))
        for i, (a, v) in enumerate(zip(args, value, strict=True))
    )


def build(cls: type, raw: Any, path: str = "") -> Any:
    """Builds the frozen dataclass ``cls`` from a mapping, strictly.

    Raises:
        Invalid: An unknown or missing key, a wrong type or a failed check.
    """
    if not isinstance(raw, Mapping):
        raise Invalid(path, f"expected a mapping, got {describe(raw)}")
    fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            raise Invalid(
                join(path, str(key)),
                f"unknown key; valid keys here: {format_options(fields)}"
                + did_you_mean(str(key), fields),
            )
    values = {}
    for key, field in fields.items():
        sub = join(path, key)
        if key not in raw:
            if _required(field):
                raise Invalid(sub, f"missing; it is required ({field.metadata['doc']})")
            continue
        value = convert(hints(cls)[field.name], raw[key], sub)
        check = field.metadata.get("check")
        problem = check(value) if check and value is not None else None
        if problem:
            raise Invalid(sub, f"got {describe(raw[key])}: {problem}")
        values[field.name] = value
    instance = cls(**values)
    for sub, message in getattr(instance, "problems", lambda: ())():
        raise Invalid(join(path, sub) if sub else path, message)
    return instance


def _required(field: dataclasses.Field) -> bool:
    return (
        field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )


def to_plain(value: Any) -> Any:
    """A dataclass tree as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = getattr(value, "to_plain", None)
        if plain is not None:
            return plain()
        return {
            yaml_key(f): to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    return value


# Value checks for ``option(check=...)``: return a problem or None.
def at_least(low: float) -> Check:
    return lambda v: None if _all(v, lambda x: x >= low) else f"must be >= {low}"


def greater_than(low: float) -> Check:
    return lambda v: None if _all(v, lambda x: x > low) else f"must be > {low}"


def in_range(low: float, high: float) -> Check:
    return lambda v: (
        None if _all(v, lambda x: low <= x <= high) else f"must be in [{low}, {high}]"
    )


def _all(value: Any, ok: Callable[[Any], bool]) -> bool:
    items: Iterable[Any] = value if isinstance(value, tuple) else (value,)
    return all(ok(x) for x in items if x is not None)
