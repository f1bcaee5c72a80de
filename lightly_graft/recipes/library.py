"""What the recipe schema reads from the library instead of restating it.

A recipe section that configures a library part takes that part's keyword
arguments, types, value constraints (``Annotated`` metadata), defaults and
documentation (the Google-style ``Args:`` of its docstring) from its signature:
:func:`signature_model` turns a whole signature into a strict pydantic model,
:func:`configures` adds chosen arguments to a section of the recipe's own keys,
:func:`library_default` reads one default, :func:`arg_docs` the docs.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, Field, create_model

from lightly_graft.recipes.validation import STRICT
from lightly_graft.signatures import KeywordArgument, keyword_arguments

_ARG = re.compile(r"^    (\w+)(?: \([^)]*\))?: (.*)$")  # "    name (type): text"
_ROLE = re.compile(r":\w+:(`[^`]+`)")  # ":class:`DataError`" -> "`DataError`"


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
    return {k: _ROLE.sub(r"\1", v.replace("``", "`")) for k, v in docs.items()}


def _field(arg: KeywordArgument, optional: bool = False) -> tuple[Any, Any]:
    """A pydantic field of a keyword argument: its annotation, default and text.
    ``optional``: None ("the library's") instead of the default."""
    annotation, default = arg.annotation, arg.default
    if optional:
        annotation, default = annotation | None, None
    elif default is inspect.Parameter.empty:
        default = ...
    return annotation, Field(default, description=arg_docs(arg.owner).get(arg.name, ""))


def signature_model(
    target: type, *, name: str, exclude: Iterable[str] = (), optional: bool = False
) -> type[BaseModel]:
    """A strict, frozen pydantic model named ``name`` of the keyword arguments of
    class ``target`` (a dataclass: its fields), less ``exclude``. ``optional``:
    every key may be left out (None: "the library's"); otherwise a key without
    a default is required."""
    fields: dict[str, Any] = {
        arg.name: _field(arg, optional)
        for arg in keyword_arguments(target)
        if arg.name not in exclude
    }
    return create_model(name, __config__=STRICT, **fields)


class LibrarySection(BaseModel):
    """A recipe section with keys that are a library part's keyword arguments
    (added by :func:`configures`)."""

    model_config = STRICT
    #: Recipe key -> the keyword argument of the library part it sets.
    library_names: ClassVar[Mapping[str, str]] = {}

    def library_arguments(self) -> dict[str, Any]:
        """The values of those keys, by argument name."""
        return {arg: getattr(self, key) for key, arg in self.library_names.items()}

    if TYPE_CHECKING:  # the keys that configures() adds are not in the class body

        def __getattr__(self, name: str) -> Any: ...


Section = TypeVar("Section", bound=type[LibrarySection])


def configures(
    target: type, *names: str, **renamed: str
) -> Callable[[Section], Section]:
    """Class decorator: the section's own keys, then the keyword arguments
    ``names`` of class ``target`` (``renamed``: recipe key = argument name), each
    with the argument's type, constraints, default and ``Args:`` text."""
    keys = {name: name for name in names} | renamed

    def decorate(section: Section) -> Section:
        args = {arg.name: arg for arg in keyword_arguments(target)}
        fields: dict[str, Any] = {k: _field(args[a]) for k, a in keys.items()}
        model = create_model(
            section.__name__,
            __base__=section,
            __module__=section.__module__,
            __doc__=section.__doc__,
            __namespace__={"library_names": keys},
            **fields,
        )
        return cast(Section, model)

    return decorate
