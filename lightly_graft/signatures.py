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
import typing
from collections.abc import Iterator
from typing import Any, NamedTuple

EMPTY = inspect.Parameter.empty


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
