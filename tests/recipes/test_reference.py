from __future__ import annotations

from pathlib import Path

from lightly_graft.recipes.reference import BEGIN, END, reference_markdown, sections
from lightly_graft.recipes.validation import keys_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def test_docs_reference_is_current() -> None:
    text = DOCS.read_text()
    generated = text.split(BEGIN)[1].split(END)[0].strip()
    assert generated == reference_markdown().strip(), (
        "docs/recipes.md is stale: run "
        "`python -m lightly_graft.recipes.reference docs/recipes.md`"
    )


def test_reference_names_every_key() -> None:
    text = reference_markdown()
    for _, model in sections():
        for key in keys_of(model):
            assert f"| `{key}` |" in text
