"""What the recipe schema reads from the library instead of restating it.

A recipe section that configures a library part takes that part's keyword
arguments, types, value constraints (``Annotated`` metadata), defaults and
documentation (the Google-style ``Args:`` of its docstring) from its signature:
:func:`signature_model` turns a signature into a strict pydantic model,
:func:`library_default` reads one default, :func:`arg_docs` the docs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field, create_model

from lightly_graft.recipes.validation import STRICT
from lightly_graft.signatures import keyword_arguments

_ARG = re.compile(r"^    (\w+)(?: \([^)]*\))?: (.*)$")  # "    name (type): text"


def library_default(func: Callable[..., Any], name: str) -> Any:
    """The default of the keyword argument ``name`` of ``func`` (or a class)."""
    if isinstance(func, type):
        return next(a.default for a in keyword_arguments(func) if a.name == name)
    return inspect.signature(func).parameters[name].default


@functools.cache
def arg_docs(obj: Any) -> dict[str, str]:
    """Argument name -> its text in the ``Args:`` section of a docstring."""
    lines = inspect.cleandoc(obj.__doc__ or "").splitlines()
    start = lines.index("Args:") + 1 if "Args:" in lines else len(lines)
    docs: dict[str, str] = {}
    for line in lines[start:]:
        if line and not line.startswith(" "):  # the next section
            break
        match = _ARG.match(line)
        if match:
            docs[match.group(1)] = match.group(2)
        elif docs and line.strip():
            last = next(reversed(docs))
            docs[last] += " " + line.strip()
    return {k: v.replace("``", "`") for k, v in docs.items()}


def _parameters(target: type) -> Iterator[tuple[str, Any, Any, str]]:
    """(name, annotation, default, doc) of a dataclass's fields or of a class's
    keyword arguments (along ``**kwargs`` to its bases); ``inspect.Parameter.
    empty``: no default."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        docs = arg_docs(target)
        for f in dataclasses.fields(target):
            empty = f.default is dataclasses.MISSING
            default = inspect.Parameter.empty if empty else f.default
            yield f.name, hints[f.name], default, docs.get(f.name, "")
        return
    for arg in keyword_arguments(target):
        yield (
            arg.name,
            arg.annotation,
            arg.default,
            arg_docs(arg.owner).get(arg.name, ""),
        )


def signature_model(
    target: type, *, name: str, exclude: Iterable[str] = (), optional: bool = False
) -> type[BaseModel]:
    """A strict, frozen pydantic model of ``target``'s keyword arguments.

    Args:
        target: A dataclass (its fields) or a class (its ``__init__``).
        name: The model's name.
        exclude: Arguments left out (set elsewhere).
        optional: Every key may be left out (None: "the library's"); otherwise
            a key without a default is required.
    """
    fields: dict[str, Any] = {}
    for key, annotation, default, doc in _parameters(target):
        if key not in exclude:
            if optional:
                annotation, default = annotation | None, None
            elif default is inspect.Parameter.empty:
                default = ...
            fields[key] = (annotation, Field(default, description=doc))
    return create_model(name, __config__=STRICT, **fields)
