"""The recipe format reference, generated from the schema's models.

``docs/recipes.md`` embeds ``reference_markdown()`` between two marker lines; a
test checks that the page is current, so the reference names every key, type
and default the loader accepts. Regenerate with
``python -m lightly_graft.recipes.reference docs/recipes.md``.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lightly_graft.recipes.schema import OptimizerConfig, Recipe
from lightly_graft.recipes.validation import (
    YAML_TYPES,
    as_lists,
    join,
    keys_of,
    models_in,
)

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m lightly_graft.recipes.reference) -->"
END = "<!-- END GENERATED REFERENCE -->"


def type_name(tp: Any) -> str:
    """A reader's name of a type hint ("a number", "one of 'a', 'b'")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is tuple:
        item = type_name(args[0])
        if item.startswith("one of"):
            return f"a list, each {item}"
        count = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{item.removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a mapping"
    name = YAML_TYPES.get(tp)
    if name is None:
        return "any value"
    return ("an " if name[0] in "aeiou" else "a ") + name


def _default(field: FieldInfo, model: type[BaseModel]) -> str:
    if model is OptimizerConfig:
        return "the method's"
    value = field.default
    if isinstance(value, BaseModel) or field.default_factory is not None:
        return "(section defaults)"
    if value is PydanticUndefined:
        return "**required**"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    value = as_lists(value)
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def section_table(model: type[BaseModel]) -> str:
    """A markdown table of one section's keys."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, name in keys_of(model).items():
        field = model.model_fields[name]
        kind = type_name(field.annotation).replace("|", "\\|")
        doc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{key}` | {kind} | {_default(field, model)} | {doc} |")
    return "\n".join(lines)


def sections(
    model: type[BaseModel] = Recipe, path: str = ""
) -> Iterator[tuple[str, type[BaseModel]]]:
    """(YAML path, model) of every section, depth first (``stages[i].knn``)."""
    yield path, model
    for key, name in keys_of(model).items():
        annotation = model.model_fields[name].annotation
        many = "[i]" if typing.get_origin(annotation) is tuple else ""
        for inner in models_in(annotation)[:1]:
            yield from sections(inner, join(path, key) + many)


def reference_markdown() -> str:
    """Every section's table, with headings."""
    parts = []
    for path, model in sections():
        title = f"`{path}`" if path else "Top level"
        parts += [f"### {title}", "", section_table(model), ""]
    return "\n".join(parts).rstrip() + "\n"


def update_page(path: str | Path) -> bool:
    """Rewrites the generated part of a page; returns whether it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n\n{reference_markdown()}\n{END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":  # pragma: no cover
    for page in sys.argv[1:]:
        print(f"{page}: {'updated' if update_page(page) else 'up to date'}")
