"""Command-line overrides: ``--set KEY=VALUE``, e.g. ``stages.1.epochs=5``.

``KEY`` is a dotted path into the YAML tree (list items by index, stages also
by name: ``stages.moco.epochs``); ``VALUE`` is parsed as YAML. They apply to the
raw tree before validation, so an overridden value is checked like one in the
file.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from lightly_graft.errors import RecipeError, did_you_mean
from lightly_graft.recipes.validation import join
from lightly_graft.recipes.yaml_io import parse_yaml


def parse_override(text: str) -> tuple[list[str], Any]:
    """Splits ``"a.b.1=VALUE"`` into ``(["a", "b", "1"], parsed VALUE)``."""
    key, sep, value = text.partition("=")
    segments = key.strip().split(".")
    if not sep or not all(segments):
        raise RecipeError(
            f"--set '{text}': expected KEY=VALUE with a dotted KEY, e.g. "
            "--set stages.1.epochs=5"
        )
    return segments, parse_yaml(value, source=f"--set '{text}'")


def _index(container: list, segment: str, path: str, text: str) -> int:
    if segment.lstrip("-").isdigit():
        index = int(segment)
        if -len(container) <= index < len(container):
            return index % len(container)
        raise RecipeError(
            f"--set '{text}': {path} has {len(container)} entries; index {index} "
            "is out of range"
        )
    names = [s.get("name") for s in container if isinstance(s, dict)]
    if path == "stages" and segment in names:
        return names.index(segment)
    raise RecipeError(
        f"--set '{text}': '{segment}' does not pick an entry of {path}: use an index "
        f"0..{len(container) - 1}"
        + (
            " or a stage name" + did_you_mean(segment, map(str, names))
            if path == "stages"
            else ""
        )
    )


def apply_override(tree: MutableMapping[str, Any], text: str) -> str:
    """Applies one ``KEY=VALUE`` override in place; returns the key path set."""
    segments, value = parse_override(text)
    node: Any = tree
    path = ""
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if isinstance(node, list):
            key: str | int = _index(node, segment, path, text)
        elif isinstance(node, MutableMapping):
            key = segment
        else:
            raise RecipeError(
                f"--set '{text}': {path} is a value ({node!r}), not a mapping or a "
                "list, so it has no key "
                f"'{segment}'"
            )
        path = join(path, key)
        if last:
            node[key] = value
        else:
            if isinstance(node, MutableMapping) and node.get(key) is None:
                node[key] = {}
            node = node[key]
    return path


def apply_overrides(
    tree: MutableMapping[str, Any], overrides: Iterable[str]
) -> dict[str, str]:
    """Applies overrides in order; returns ``{key path: override text}``."""
    return {apply_override(tree, text): text for text in overrides}
