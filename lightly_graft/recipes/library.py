"""What the recipe schema reads from the library instead of restating it.

A recipe section that configures a library part takes that part's keyword
arguments, types, value constraints (``Annotated`` metadata), defaults and
documentation (the Google-style ``Args:`` of its docstring) from its signature:
:func:`signature_model` turns a signature into a strict pydantic model,
:func:`library_default` reads one default, :func:`arg_docs` the docs.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field, create_model

from lightly_graft.recipes.validation import STRICT
from lightly_graft.signatures import keyword_arguments

_ARG = re.compile(r"^    (\w+)(?: \([^)]*\))?: (.*)$")  # "    name (type): text"


def library_default(cls: type, name: str) -> Any:
    """The default of the keyword argument ``name`` of a class."""
    return next(a.default for a in keyword_arguments(cls) if a.name == name)


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


def signature_model(
    target: type, *, name: str, exclude: Iterable[str] = (), optional: bool = False
) -> type[BaseModel]:
    """A strict, frozen pydantic model named ``name`` of the keyword arguments of
    class ``target`` (a dataclass: its fields), less ``exclude``. ``optional``:
    every key may be left out (None: "the library's"); otherwise a key without
    a default is required."""
    fields: dict[str, Any] = {}
    for arg in keyword_arguments(target):
        if arg.name not in exclude:
            annotation, default = arg.annotation, arg.default
            if optional:
                annotation, default = annotation | None, None
            elif default is inspect.Parameter.empty:
                default = ...
            doc = arg_docs(arg.owner).get(arg.name, "")
            fields[arg.name] = (annotation, Field(default, description=doc))
    return create_model(name, __config__=STRICT, **fields)
