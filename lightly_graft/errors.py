"""User-facing errors.

Every problem with user input (a recipe, a checkpoint, a data path, a CLI flag)
is raised as a subclass of :class:`GraftError`. The message names the value that
was received, what is wrong with it and how to fix it. The CLI prints the message
of a :class:`GraftError` on one line and exits with code 2; no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GraftError(ValueError):
    """A problem with user input that the user can fix."""


class RecipeError(GraftError):
    """An invalid recipe: unknown key, wrong type, out-of-range value."""


class CheckpointError(GraftError):
    """A checkpoint that is missing, unreadable, of another format or mismatched."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that pickles code a weights-only load does not run."""


class DataError(GraftError):
    """A dataset that is missing, empty or malformed."""


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """Returns ' (did you mean 'x'?)' for the closest option, or ''."""
    matches = difflib.get_close_matches(str(value), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def format_options(options: Iterable[str]) -> str:
    """Formats valid options as "'a', 'b', 'c'"."""
    return ", ".join(f"'{o}'" for o in sorted(options))
