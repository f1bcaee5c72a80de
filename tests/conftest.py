"""Fixtures and test-session settings; helpers live in ``graft_testing``."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from graft_testing import TINY_BACKBONE

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")


@pytest.fixture
def tiny_backbone() -> dict:
    return dict(TINY_BACKBONE)
