"""Whether a state dict fits a model: the missing, unexpected and mismatched
keys, worded once for loading a backbone (:mod:`~lightly_graft.training.checkpoints`)
and for grafting (:mod:`~lightly_graft.training.grafting`).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from lightly_graft.errors import CheckpointError


def check_state_fits(
    target: Mapping[str, Tensor], source: Mapping[str, Tensor], name: str
) -> None:
    """Raises a :class:`CheckpointError` naming every missing, unexpected and
    mismatched key if ``source`` does not load into ``target`` exactly."""
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    mismatched = mismatched_shapes(target, source)
    if missing or unexpected or mismatched:
        raise CheckpointError(describe_mismatch(name, missing, unexpected, mismatched))


def mismatched_shapes(
    target: Mapping[str, Tensor], source: Mapping[str, Tensor]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(key, source shape, target shape)`` of keys in both with other shapes."""
    return [
        (k, tuple(source[k].shape), tuple(target[k].shape))
        for k in sorted(set(target) & set(source))
        if tuple(source[k].shape) != tuple(target[k].shape)
    ]


def describe_mismatch(
    name: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    limit: int = 8,
) -> str:
    parts = [f"The weights of '{name}' do not fit the model:"]
    if mismatched:
        shown = ", ".join(
            f"{k}: checkpoint {s} vs model {t}" for k, s, t in mismatched[:limit]
        )
        parts.append(f"{len(mismatched)} shape mismatch(es) ({shown})")
    if missing:
        parts.append(f"{len(missing)} missing key(s) {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {unexpected[:limit]}")
    parts.append(
        "Check that the backbone (name, img_size, patch_size, embed_dim, depth) "
        "matches the checkpoint."
    )
    return " ".join(parts)
