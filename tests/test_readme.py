"""The README's examples stay in step with the code."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from lightly_graft import load_recipe

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme__recipe_example_loads(tmp_path: Path) -> None:
    (block,) = _blocks("yaml")
    path = tmp_path / "example.yaml"
    path.write_text(block)
    recipe = load_recipe(path)
    assert [stage.method for stage in recipe.stages] == ["mae", "grafted_moco"]
    assert recipe.stages[1].graft is not None and recipe.stages[1].anchor.weight > 0


def test_readme__python_examples_import_what_exists() -> None:
    blocks = _blocks("python")
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith(
                "lightly_graft"
            ):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def test_readme__shipped_recipes_it_lists_exist() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in re.findall(r"`(recipes/[\w/]+\.yaml)`", README):
        assert (root / name).is_file(), name


def test_readme__figures_it_shows_exist() -> None:
    root = Path(__file__).resolve().parents[1]
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README):
        assert (root / path).is_file(), path
