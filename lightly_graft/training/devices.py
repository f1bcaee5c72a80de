"""The device of single-process work (kNN floor, evaluation, analysis)."""

from __future__ import annotations

import torch

from lightly_graft.errors import GraftError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when available, else the CPU; Lightning's
    accelerator name ``gpu`` means ``cuda``; anything else as ``torch.device``.

    Raises:
        GraftError: Not a device, or CUDA asked for where there is none.
    """
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device("cuda" if name == "gpu" else name)
    except RuntimeError:
        raise GraftError(f"'{name}' is not a device: use auto, cpu or cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GraftError(f"device '{name}' but CUDA is not available: use cpu.")
    return device
