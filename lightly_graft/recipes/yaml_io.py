"""Reading and writing recipe YAML.

PyYAML's ``SafeLoader`` with two fixes for recipes:

- ``1e-5`` is a float. PyYAML follows YAML 1.1, where a float needs a dot
  (``1.0e-5``), and would hand the LR over as the string ``"1e-5"``.
- A key given twice in one mapping is an error; PyYAML keeps the last silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lightly_graft.errors import RecipeError


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader + exponent floats without a dot + duplicate-key errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parses YAML text; ``source`` names it in errors."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise RecipeError(f"{source} is not valid YAML: {detail}") from error


def read_yaml(path: str | Path) -> Any:
    """Reads a recipe file; a missing or unreadable file is a ``RecipeError``."""
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        hint = ""
        if not path.exists() and not path.suffix:
            hint = "; recipes are .yaml files, e.g. recipes/quickstart.yaml"
        raise RecipeError(f"recipe '{path}' is {what}{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"cannot read recipe '{path}': {error}") from error
    return parse_yaml(text, source=f"recipe '{path}'")


class _Dumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars on one line (``[0.9, 0.95]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(data: Any, *, header: str = "") -> str:
    """YAML text of plain data, keys in the given order, with a comment header."""
    body = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=88
    )
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join(lines) + ("\n" if lines else "") + body
