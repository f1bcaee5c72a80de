"""MTL (Layer Grafted §2.2, Table 1): MAE loss + MoCo v3 loss on one encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graft_testing import tiny_method, tiny_views
from PIL import Image
from torch.testing import assert_close

from lightly_graft.methods import mtl


def test_mtl__loss_is_the_sum_of_its_parts() -> None:
    torch.manual_seed(0)
    method = tiny_method("mtl").train()
    views = tiny_views(3)
    torch.manual_seed(1)
    out = method.training_loss(views)
    torch.manual_seed(1)
    terms = method.loss_terms(views)
    assert set(terms) == {"mim", "cl"}
    assert_close(out.loss, terms["mim"] + terms["cl"], rtol=0, atol=0)
    assert_close(out.logs["mim"], terms["mim"])
    assert_close(out.logs["cl"], terms["cl"])


def test_mtl__parts_are_plain_mae_and_plain_moco_v3() -> None:
    torch.manual_seed(0)
    method = tiny_method("mtl").train()
    moco = tiny_method("grafted_moco", freeze_patch_embed=False).train()
    mae = tiny_method("mae").train()
    moco.load_state_dict(method.state_dict(), strict=False)
    mae.backbone.load_state_dict(method.backbone.state_dict())
    mae.decoder.load_state_dict(method.decoder.state_dict())
    views = tiny_views(3)
    torch.manual_seed(1)
    terms = method.loss_terms(views)
    torch.manual_seed(1)
    assert_close(terms["mim"], mae.training_loss(views[2:]).loss, rtol=1e-6, atol=1e-6)
    assert_close(terms["cl"], moco.training_loss(views[:2]).loss, rtol=1e-6, atol=1e-6)


def test_mtl__weights_scale_the_parts() -> None:
    torch.manual_seed(0)
    method = tiny_method("mtl", mim_weight=0.5, cl_weight=2.0).train()
    views = tiny_views(3)
    torch.manual_seed(1)
    loss = method.training_loss(views).loss
    torch.manual_seed(1)
    terms = method.loss_terms(views)
    assert_close(loss, 0.5 * terms["mim"] + 2.0 * terms["cl"])


def test_mtl__needs_three_views() -> None:
    with pytest.raises(ValueError, match="3 views"):
        tiny_method("mtl").training_loss(tiny_views(2))


def test_mtl__transform_yields_two_cl_views_and_one_mim_view() -> None:
    torch.manual_seed(0)
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    )
    views = mtl.make_transform(input_size=32)(image)
    assert len(views) == 3 == tiny_method("mtl").num_views
    assert all(v.shape == (3, 32, 32) for v in views)


def test_mtl__hparams_rebuild_the_method() -> None:
    method = tiny_method("mtl", mim_weight=0.5)
    assert mtl.MTL(**method.hparams).mim_weight == 0.5
