"""The recipe format reference, generated from the schema's field docs.

``docs/recipes.md`` embeds ``reference_markdown()`` between two marker lines; a
test checks that the page is current, so the reference names every key, type
and default the loader accepts. Regenerate with
``python -m lightly_graft.recipes.reference docs/recipes.md``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from lightly_graft.recipes.schema import (
    AnchorConfig,
    Augment,
    BackboneConfig,
    DataConfig,
    GraftConfig,
    KNNConfig,
    Normalize,
    OptimizerConfig,
    Recipe,
    StageConfig,
)
from lightly_graft.recipes.typed import hints, type_name, yaml_key

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m lightly_graft.recipes.reference) -->"
END = "<!-- END GENERATED REFERENCE -->"

SECTIONS: tuple[tuple[str, type], ...] = (
    ("Top level", Recipe),
    ("`data`", DataConfig),
    ("`data.normalize`", Normalize),
    ("`data.augment`", Augment),
    ("`backbone`", BackboneConfig),
    ("`stages[i]`", StageConfig),
    ("`stages[i].optimizer`", OptimizerConfig),
    ("`stages[i].graft`", GraftConfig),
    ("`stages[i].anchor`", AnchorConfig),
    ("`stages[i].knn`", KNNConfig),
)


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value: Any = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section defaults)"
    else:
        return "**required**"
    if value is None:
        return "null"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def section_table(cls: type) -> str:
    """A markdown table of one section's keys."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        kind = type_name(hints(cls)[field.name]).replace("|", "\\|")
        doc = field.metadata["doc"].replace("|", "\\|")
        lines.append(f"| `{yaml_key(field)}` | {kind} | {_default(field)} | {doc} |")
    return "\n".join(lines)


def reference_markdown() -> str:
    """Every section's table, with headings."""
    parts = []
    for title, cls in SECTIONS:
        parts += [f"### {title}", "", section_table(cls), ""]
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
