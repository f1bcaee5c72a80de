"""Reference implementations that tests compare the package against.

Import them with ``from references import ...`` (``tests/`` is on pytest's
``pythonpath``). They are not used by the package: each one states a definition
in its most direct form, for the numeric tests.
"""

from __future__ import annotations

import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_graft.modules.attention_hooks import capture_attention


@torch.no_grad()
def attention_maps(vit: VisionTransformer, images: Tensor) -> list[Tensor]:
    """Attention maps of every block of a timm VisionTransformer.

    Holds all maps in memory: for large models or batches reduce per block with
    :func:`capture_attention` instead.

    Args:
        vit: A timm ``VisionTransformer`` (uses ``vit.blocks`` and
            ``vit.forward_features``).
        images: (batch_size, channels, height, width).

    Returns:
        One (batch_size, num_heads, num_tokens, num_tokens) tensor per block, in
        block order; tokens include the prefix tokens (CLS first).
    """
    maps: dict[int, Tensor] = {}

    def keep(index: int, attention: Tensor) -> None:
        maps[index] = attention

    blocks = list(vit.blocks)
    with capture_attention(blocks, keep):
        vit.forward_features(images)
    return [maps[i] for i in range(len(blocks))]


def warmup_cosine_scale(
    step: int, max_steps: int, warmup_steps: int, end_scale: float = 0.0
) -> float:
    """Multiplier of a linear warmup then cosine decay schedule.

    The multiplier rises linearly to 1 over ``warmup_steps`` (``(step + 1) /
    warmup_steps``, lightly's convention, so the first step does not have LR 0),
    then decays by a half cosine to ``end_scale`` at ``max_steps - 1``. Each
    parameter group's LR is its own base LR times this multiplier.

    Args:
        step: Current optimizer step.
        max_steps: Total number of optimizer steps.
        warmup_steps: Number of warmup steps (0 for none).
        end_scale: Final multiplier.
    """
    warmup_steps = min(warmup_steps, max_steps)
    return cosine_warmup_schedule(
        step=step,
        max_steps=max_steps,
        start_value=1.0,
        end_value=end_scale,
        warmup_steps=warmup_steps,
        warmup_start_value=0.0,
    )
