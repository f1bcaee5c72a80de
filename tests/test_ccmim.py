"""ccMIM: objective against the official code, split, stop-gradient, lambda."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import torch.nn as nn
from graft_testing import tiny_method, tiny_views
from lightly.models.utils import random_token_mask
from torch.testing import assert_close

from lightly_graft import zoo
from lightly_graft.functional.importance import importance_token_mask
from lightly_graft.methods.ccmim import CCMIM
from lightly_graft.modules.attention_hooks import cls_attention_importance
from lightly_graft.modules.objectives import build_objective


def _official_alignment_loss(cls_vis, cls_mask, T=0.5):
    """Sherrylone/ccMIM models_ccmim.py ``forward_alignment_loss`` (after the
    projector), one process: ``concat_all_gather`` (no grad) is a detach and the
    label offset ``N * rank`` is 0.
    https://github.com/Sherrylone/ccMIM/blob/fdc90963a78752f51b9fc91361e14f75405d6738/models_ccmim.py#L265-L276"""
    cls_vis = nn.functional.normalize(cls_vis, dim=1)
    cls_mask = nn.functional.normalize(cls_mask, dim=1).detach()
    logits = torch.einsum("nc,mc->nm", [cls_vis, cls_mask]) / T
    labels = torch.arange(logits.shape[0], dtype=torch.long)
    return nn.CrossEntropyLoss()(logits, labels) * (2 * T)


def test_ccmim_objective__contrast_matches_official_code() -> None:
    torch.manual_seed(0)
    visible = torch.randn(8, 16, requires_grad=True)
    masked = torch.randn(8, 16, requires_grad=True)
    objective = build_objective("ccmim")
    assert objective.temperature == 0.5
    assert_close(
        objective.contrast(visible, masked),
        _official_alignment_loss(visible, masked),
        rtol=1e-6,
        atol=1e-6,
    )
    objective.contrast(visible, masked).backward()
    assert masked.grad is None and visible.grad is not None  # masked set = teacher


@pytest.mark.parametrize("weight", [0.0, 0.1, 0.2])
def test_ccmim_objective__weighted_sum_eq10(weight: float) -> None:
    torch.manual_seed(0)
    prediction, target = torch.randn(4, 12, 48), torch.randn(4, 12, 48)
    visible, masked = torch.randn(4, 16), torch.randn(4, 16)
    objective = build_objective("ccmim", contrast_weight=weight)
    expected = objective.reconstruction(
        prediction, target
    ) + weight * objective.contrast(visible, masked)
    assert_close(objective(prediction, target, visible, masked), expected)


def test_ccmim__defaults_paper_lambda_and_official_temperature() -> None:
    defaults = {f.name: f.default for f in fields(zoo.get("ccmim").config_cls)}
    assert defaults["contrast_weight"] == 0.2 and defaults["temperature"] == 0.5
    assert defaults["mask_ratio"] == 0.75 and defaults["random_masking"] is False


def test_ccmim__split_is_importance_sampling_of_cls_attention() -> None:
    torch.manual_seed(0)
    method = tiny_method("ccmim").train()
    images = tiny_views(1)[0]
    torch.manual_seed(5)
    idx_keep, idx_mask = method.split(images)
    torch.manual_seed(5)
    importance = cls_attention_importance(method.backbone, images)
    expected = importance_token_mask(importance, mask_ratio=0.75)
    assert torch.equal(idx_keep, expected[0]) and torch.equal(idx_mask, expected[1])
    assert idx_keep.shape == (8, 1 + 4) and idx_mask.shape == (8, 12)


def test_ccmim__random_switch_is_lightly_random_mask() -> None:
    torch.manual_seed(0)
    method = tiny_method("ccmim", random_masking=True)
    images = tiny_views(1)[0]
    torch.manual_seed(5)
    ours = method.split(images)
    torch.manual_seed(5)
    reference = random_token_mask((8, 17), mask_ratio=0.75)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])


def test_ccmim__loss_is_reconstruction_plus_lambda_contrast() -> None:
    torch.manual_seed(0)
    method = tiny_method("ccmim", contrast_weight=0.1).train()
    views = tiny_views(1)
    torch.manual_seed(1)
    out = method.training_loss(views)
    torch.manual_seed(1)
    terms = method.loss_terms(views)
    assert_close(out.loss, terms["reconstruction"] + 0.1 * terms["contrast"])
    assert set(out.logs) == {"reconstruction", "contrast"}


def test_ccmim__masked_set_is_stop_gradient() -> None:
    # The teacher (masked set) carries no graph; the backbone gets its gradient
    # from the reconstruction and the visible CLS only.
    torch.manual_seed(0)
    method = tiny_method("ccmim").train()
    images = tiny_views(1)[0]
    _, idx_mask = method.split(images)
    assert not method.masked_set_cls(images, idx_mask).requires_grad


def test_ccmim__lambda_zero_is_plain_masked_reconstruction() -> None:
    torch.manual_seed(0)
    method = tiny_method("ccmim").train()
    images = tiny_views(1)[0]
    with_weight = tiny_method("ccmim", contrast_weight=0.0).train()
    with_weight.load_state_dict(method.state_dict())
    torch.manual_seed(2)
    loss = with_weight.training_loss([images]).loss
    torch.manual_seed(2)
    reconstruction = with_weight.loss_terms([images])["reconstruction"]
    assert_close(loss, reconstruction)  # lambda = 0: plain masked reconstruction


def test_ccmim__hparams_rebuild_the_method() -> None:
    method = tiny_method("ccmim", contrast_weight=0.1)
    assert "contrast_weight" in method.hparams and "objective" not in method.hparams
    assert CCMIM(**method.hparams).objective.contrast_weight == 0.1
