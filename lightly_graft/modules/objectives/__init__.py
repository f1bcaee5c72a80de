"""Objectives: the losses of the methods, swappable by name.

Each objective is a thin ``nn.Module`` holding its coefficients, with the math
in ``lightly_graft.functional`` or lightly. Two-view objectives
(``contrastive``, ``vicreg``, ``byol``) share one signature::

    loss = objective(online, target)

where ``online[i]`` is view i through the trainable branch (after the predictor,
if any) and ``target[i]`` is view i through the target branch (the momentum
encoder, or the same branch for VICReg). Other objectives document their own
``forward``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import Tensor, nn

from lightly_graft.errors import GraftError, did_you_mean, format_options


class Objective(nn.Module):
    """Base class of all objectives; ``name`` is the registry key.

    Two-view objectives can split ``forward(online, target)`` into
    ``forward_prepared(online, prepare_targets(target))``, so that a caller
    with several queries against the same targets (Masked MoCo's n chunks)
    does the per-target work (normalising, gathering across ranks) once. The
    defaults here prepare nothing.
    """

    name: str = ""

    def prepare_targets(self, target: Sequence[Tensor]) -> Sequence[Any]:
        return target

    def forward_prepared(
        self, online: Sequence[Tensor], prepared: Sequence[Any]
    ) -> Tensor:
        loss: Tensor = self(online, prepared)
        return loss


_REGISTRY: dict[str, type[Objective]] = {}
T = TypeVar("T", bound=type[Objective])


def register_objective(name: str) -> Callable[[T], T]:
    """Class decorator that registers an objective under ``name``."""

    def decorator(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"An objective named '{name}' is already registered.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    if name not in _REGISTRY:
        raise GraftError(
            f"Unknown objective '{name}'{did_you_mean(name, _REGISTRY)}; valid "
            f"objectives: {format_options(_REGISTRY)}."
        )
    return _REGISTRY[name]


def build_objective(name: str, **kwargs: Any) -> Objective:
    """Builds a registered objective; unknown names and arguments are errors."""
    cls = objective_class(name)
    valid = accepted_arguments(name)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise GraftError(
            f"Objective '{name}' takes no argument(s) {unknown}; valid arguments: "
            f"{format_options(valid)}."
        )
    return cls(**kwargs)


def accepted_arguments(name: str) -> list[str]:
    """Names of the keyword arguments of an objective."""
    params = inspect.signature(objective_class(name).__init__).parameters
    return [p for p in params if p != "self"]


# Built-in objectives register themselves on import.
from lightly_graft.modules.objectives import (  # noqa: E402, F401
    byol,
    ccmim,
    contrastive,
    mae,
    masked_contrastive,
    vicreg,
)
