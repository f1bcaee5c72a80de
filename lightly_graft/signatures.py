"""The keyword arguments a class takes, read from its constructors.

A zoo method's subclass declares only the arguments it adds or whose default it
changes and passes the rest on with ``**kwargs`` (``MaskedMoCo(GraftedMoCo)``).
``inspect.signature`` stops at ``**kwargs``, so this walks the MRO: each class's
own ``__init__`` in turn, the first declaration of a name winning (the
subclass's default), until an ``__init__`` without ``**kwargs``. The zoo's
config dataclasses, the recipe schema, the generated docs and the saved
hyperparameters all read the arguments from here.
"""

from __future__ import annotations

import inspect
import operator
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from lightly_graft.errors import GraftError

EMPTY = inspect.Parameter.empty
# annotated_types' bound attributes (Ge(1).ge, Interval(gt=0, lt=1).gt, ...).
_BOUNDS = {
    "gt": (operator.gt, ">"),
    "ge": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "le": (operator.le, "<="),
}


class KeywordArgument(NamedTuple):
    name: str
    annotation: Any
    default: Any  # EMPTY: required
    owner: type  # the class whose __init__ declares it (its docstring has the text)


def keyword_arguments(cls: type) -> Iterator[KeywordArgument]:
    """The keyword arguments of ``cls(...)``, the subclass's own first."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init, include_extras=True)
        forwards = False
        for name, p in inspect.signature(init).parameters.items():
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif name != "self" and p.kind is not p.VAR_POSITIONAL and name not in seen:
                seen.add(name)
                yield KeywordArgument(name, hints.get(name, Any), p.default, klass)
        if not forwards:
            return


def _bounds(annotation: Any) -> Iterator[tuple[str, Any]]:
    """(bound name, value) of the ``Annotated`` metadata in a type hint, also
    inside a union (``Annotated[int, Ge(1)] | None``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        for meta in typing.get_args(annotation)[1:]:
            for name in _BOUNDS:
                if getattr(meta, name, None) is not None:
                    yield name, getattr(meta, name)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _bounds(arg)


def check_bounds(cls: type, values: Mapping[str, Any]) -> None:
    """Enforces the value bounds that ``cls``'s keyword arguments declare as
    ``Annotated`` metadata (``k: Annotated[int, Ge(1)]``), the ones the recipe
    schema reads, on ``values`` (a constructor's ``locals()``); None passes.
    One statement of each bound serves the recipe and the Python API.

    Raises:
        GraftError: The first value outside its bounds, naming it.
    """
    for arg in keyword_arguments(cls):
        value = values.get(arg.name)
        if value is None:
            continue
        for name, bound in _bounds(arg.annotation):
            holds, symbol = _BOUNDS[name]
            if not holds(value, bound):
                raise GraftError(
                    f"{cls.__name__}: {arg.name} must be {symbol} {bound}, got "
                    f"{value!r}."
                )
