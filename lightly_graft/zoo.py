"""The zoo: one registry from a method name to its LightningModule, its config
dataclass and its default transform.

Recipes resolve ``method:`` through it, the tests parametrize over it, and
``lightly-graft zoo`` lists it. Every entry also follows the contract of lightly's
benchmark methods, so it can be dropped into the ``METHODS`` dict of lightly's
benchmark scripts::

    METHODS["grafted_moco"] = {"model": zoo.get("grafted_moco").cls,
                               "transform": zoo.get("grafted_moco").transform}
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightly_graft.errors import GraftError, did_you_mean, format_options
from lightly_graft.signatures import EMPTY, keyword_arguments

# Modules whose import registers the built-in methods.
_METHOD_MODULES = ("lightly_graft.methods",)


@dataclass(frozen=True)
class ZooEntry:
    """A registered method.

    Attributes:
        name: Registry key (``grafted_moco``).
        cls: The LightningModule class.
        config_cls: Frozen dataclass of the constructor's keyword arguments
            (types and defaults taken from the signature); the recipe layer
            validates ``method_args`` with it.
        transform_factory: ``make_transform(input_size=..., **kwargs)`` of the
            method's module.
        transform: The module-level default transform (224 px).
        batched_transform_factory: ``make_batched_transform(input_size=...,
            **kwargs)``: the same views made from a batch of decoded images on
            its device (:mod:`lightly_graft.data.batched_views`).
        description: One line for ``lightly-graft zoo``.
        recipe: Default recipe path, relative to the repository root.
    """

    name: str
    cls: type
    config_cls: type
    transform_factory: Callable[..., Any]
    transform: Any
    batched_transform_factory: Callable[..., Any]
    description: str
    recipe: str | None


_REGISTRY: dict[str, ZooEntry] = {}


def config_dataclass(cls: type) -> type:
    """A frozen dataclass with one field per keyword argument of ``cls``
    (along ``**kwargs`` to its bases: :mod:`lightly_graft.signatures`)."""
    fields: list[Any] = []
    for arg in keyword_arguments(cls):
        if arg.default is EMPTY:
            fields.append((arg.name, arg.annotation))
        else:
            field = dataclasses.field(default=arg.default)
            fields.append((arg.name, arg.annotation, field))
    # Required fields first, as dataclasses need.
    fields.sort(key=lambda f: len(f) == 3)
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields, frozen=True)


def register(
    name: str,
    cls: type,
    *,
    transform_factory: Callable[..., Any],
    transform: Any,
    batched_transform_factory: Callable[..., Any],
    description: str,
    recipe: str | None = None,
) -> ZooEntry:
    """Registers a method; a duplicate name is an error."""
    if name in _REGISTRY:
        raise ValueError(
            f"A method named '{name}' is already registered ({_REGISTRY[name].cls})."
        )
    entry = ZooEntry(
        name=name,
        cls=cls,
        config_cls=config_dataclass(cls),
        transform_factory=transform_factory,
        transform=transform,
        batched_transform_factory=batched_transform_factory,
        description=description,
        recipe=recipe,
    )
    _REGISTRY[name] = entry
    return entry


def method(name: str, *, recipe: str | None = None) -> Callable[[type], type]:
    """Class decorator: registers the class under ``name``, beside its
    definition, with its module's ``make_transform``, ``make_batched_transform``
    and module-level ``transform`` (lightly's benchmark contract) and the first
    sentence of its
    docstring as the description."""

    def decorate(cls: type) -> type:
        module = sys.modules[cls.__module__]
        summary = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
        register(
            name,
            cls,
            transform_factory=module.make_transform,
            transform=module.transform,
            batched_transform_factory=module.make_batched_transform,
            description=summary.split(". ")[0].rstrip(".").replace("``", ""),
            recipe=recipe,
        )
        return cls

    return decorate


def _load() -> None:
    for module in _METHOD_MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def entries() -> list[ZooEntry]:
    _load()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get(name: str) -> ZooEntry:
    """The entry of ``name``; an unknown name is a :class:`GraftError` listing the
    registered names."""
    _load()
    if name not in _REGISTRY:
        raise GraftError(
            f"Unknown method '{name}'{did_you_mean(name, _REGISTRY)}; registered "
            f"methods: {format_options(_REGISTRY)}."
        )
    return _REGISTRY[name]
