from __future__ import annotations

import pytest
import torch
from graft_testing import fit_tiny, tiny_method
from lightly.models import utils
from torch.testing import assert_close

from lightly_graft.functional.reconstruction import mae_loss


class _OfficialMAELoss:
    """facebookresearch/mae models_mae.py, ``patchify`` and ``forward_loss``:
    https://github.com/facebookresearch/mae/blob/efb2a8062c206524e35e47d04501ed4f544c0ae8/models_mae.py#L95-L107
    and
    https://github.com/facebookresearch/mae/blob/efb2a8062c206524e35e47d04501ed4f544c0ae8/models_mae.py#L198-L214"""

    def __init__(self, patch_size: int, norm_pix_loss: bool):
        self.p = patch_size
        self.norm_pix_loss = norm_pix_loss

    def patchify(self, imgs):
        p = self.p
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(shape=(imgs.shape[0], h * w, p**2 * 3))

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss__matches_official_forward_loss(norm_pix: bool) -> None:
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    num_patches, patch_dim = 16, 8 * 8 * 3
    prediction = torch.randn(4, num_patches, patch_dim)
    idx_keep, idx_mask = utils.random_token_mask((4, num_patches + 1), mask_ratio=0.75)
    mask = torch.zeros(4, num_patches)
    mask.scatter_(1, idx_mask - 1, 1.0)  # 1 = removed, as in MAE
    expected = _OfficialMAELoss(8, norm_pix).forward_loss(images, prediction, mask)
    patches = utils.patchify(images, 8)
    actual = mae_loss(
        utils.get_at_index(prediction, idx_mask - 1),
        utils.get_at_index(patches, idx_mask - 1),
        norm_pix=norm_pix,
    )
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_mae_loss__perfect_prediction_is_zero() -> None:
    target = torch.randn(2, 5, 12)
    assert mae_loss(target, target).item() == 0.0


def test_mae__masks_three_quarters_and_keeps_cls() -> None:
    mae = tiny_method("mae")
    idx_keep, idx_mask = mae.mask(4, "cpu")
    assert idx_keep.shape == (4, 1 + 4) and idx_mask.shape == (4, 12)
    assert (idx_keep[:, 0] == 0).all()
    assert torch.equal(
        torch.cat([idx_keep, idx_mask], 1).sort(1).values,
        torch.arange(17).expand(4, 17),
    )


def test_mae__invalid_mask_ratio() -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_method("mae", mask_ratio=1.0)


def test_lr_monitor__shows_each_group_by_name(tmp_path) -> None:
    import csv

    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    moco = tiny_method("grafted_moco")
    logger = CSVLogger(tmp_path, name="run")
    fit_tiny(
        moco,
        max_steps=2,
        callbacks=[LearningRateMonitor(logging_interval="step")],
        logger=logger,
        log_every_n_steps=1,
    )
    with open(logger.log_dir + "/metrics.csv") as f:
        columns = next(csv.reader(f))
    for group in (
        "stage0",
        "stage1",
        "stage2",
        "head",
        "stage0_no_decay",
        "online_classifier",
    ):
        assert f"lr-AdamW/{group}" in columns
