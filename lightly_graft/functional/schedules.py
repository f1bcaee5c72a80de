"""Learning-rate and momentum schedules.

Thin wrappers around lightly's schedules, so that every part of the package (the
optimizer builder, the recipes, the report) computes them through one named
function.
"""

from __future__ import annotations

from lightly.utils.scheduler import cosine_schedule

#: Batch size at which a base LR is the LR itself (Goyal et al., 2017; MAE; MoCo v3).
REFERENCE_BATCH_SIZE = 256


def scale_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule: ``lr = base_lr * batch_size / 256``.

    The official Layer Grafted and MoCo v3 code treat every LR in their configs as
    a base LR multiplied by the global batch size over 256.

    Args:
        base_lr: Base learning rate (for a batch of 256).
        batch_size: Global batch size (per device x devices x accumulation).

    Returns:
        The effective learning rate.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    return base_lr * batch_size / REFERENCE_BATCH_SIZE


def momentum_schedule(
    step: int, max_steps: int, start: float = 0.99, end: float = 1.0
) -> float:
    """Cosine momentum schedule of MoCo v3/BYOL: ``start`` at step 0, ``end`` at
    the last step (``max_steps - 1``).

    Args:
        step: Current optimizer step.
        max_steps: Total number of optimizer steps.
        start: Momentum at the first step (MoCo v3: 0.99).
        end: Momentum at the last step (1.0).
    """
    return cosine_schedule(
        step=step, max_steps=max_steps, start_value=start, end_value=end
    )
