"""SAM decoder loss: Dice + BCE (+ focal) on the low-res logits, plus IoU-head regression.

Targets are area fractions on the decoder's low-res grid (see
:meth:`SamGeometry.mask_to_model`), so BCE and Dice take soft targets. Every term sees the image
area only: the zero padding of a non-square image is cropped away at inference, so whatever the
decoder predicts there must neither dilute BCE nor count against Dice.

With several mask outputs (multimask), each prompt is scored by its best mask (the SAM paper's
minimum-over-outputs loss, which lets the three masks specialise), and the IoU head regresses
the actual IoU of every output, detached (MSE), so it learns to pick.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LossConfig:
    """Weights of the loss terms (0 disables a term)."""

    dice: float = 1.0
    bce: float = 1.0
    focal: float = 0.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25  # weight of the positive class; < 0 for none
    iou: float = 1.0

    def __post_init__(self) -> None:
        weights = (self.dice, self.bce, self.focal, self.iou)
        if min(weights) < 0 or max(weights) == 0:
            raise ValueError("loss weights must be >= 0 with at least one > 0")


def valid_area(input_sizes: Tensor, grid: int, img_size: int) -> Tensor:
    """(B, g, g) 1 where a low-res cell overlaps the image, 0 in the padding."""
    cell = img_size / grid
    ar = torch.arange(grid, device=input_sizes.device, dtype=torch.float32) * cell
    rows = ar[None, :] < input_sizes[:, 0:1].float()
    cols = ar[None, :] < input_sizes[:, 1:2].float()
    return (rows[:, :, None] & cols[:, None, :]).float()


class SamSegLoss(nn.Module):
    """Weighted Dice + BCE + focal + IoU-MSE over (B, M) mask outputs."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        from monai.losses import DiceLoss, FocalLoss

        self.config = config or LossConfig()
        self.dice_loss = DiceLoss(sigmoid=True, reduction="none", smooth_nr=1e-5, smooth_dr=1e-5)
        alpha = self.config.focal_alpha if self.config.focal_alpha >= 0 else None
        self.focal_loss = FocalLoss(
            gamma=self.config.focal_gamma, alpha=alpha, use_softmax=False, reduction="none"
        )

    def forward(
        self, logits: Tensor, iou_pred: Tensor, target: Tensor, valid: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and detached log values.

        Parameters
        ----------
        logits
            (B, M, g, g) low-res mask logits.
        iou_pred
            (B, M) the IoU head's predictions.
        target
            (B, g, g) soft targets in [0, 1].
        valid
            (B, g, g) 1 inside the image, 0 in the padding.
        """
        cfg = self.config
        b, m, g, _ = logits.shape
        logits = logits.float()
        flat = logits.reshape(b * m, 1, g, g)
        tgt = target.float()[:, None].expand(b, m, g, g).reshape(b * m, 1, g, g)
        area = valid.float()[:, None].expand(b, m, g, g).reshape(b * m, 1, g, g)
        n_valid = area.sum(dim=(1, 2, 3)).clamp(min=1.0)
        per_mask = torch.zeros(b * m, device=logits.device)
        logs: dict[str, Tensor] = {}
        if cfg.dice:
            dice = self.dice_loss(flat * area + (area - 1) * 1e4, tgt).reshape(b * m)
            per_mask = per_mask + cfg.dice * dice
            logs["dice_loss"] = dice
        if cfg.bce:
            bce = F.binary_cross_entropy_with_logits(flat, tgt, reduction="none")
            bce = (bce * area).sum(dim=(1, 2, 3)) / n_valid
            per_mask = per_mask + cfg.bce * bce
            logs["bce"] = bce
        if cfg.focal:
            focal = (self.focal_loss(flat, tgt) * area).sum(dim=(1, 2, 3)) / n_valid
            per_mask = per_mask + cfg.focal * focal
            logs["focal"] = focal
        per_mask = per_mask.reshape(b, m)
        best = per_mask.detach().argmin(dim=1)
        rows = torch.arange(b, device=logits.device)
        loss = per_mask[rows, best].mean()
        with torch.no_grad():
            pred = (logits > 0) & (valid[:, None] > 0)
            truth = (target[:, None] >= 0.5) & (valid[:, None] > 0)
            inter = (pred & truth).sum(dim=(2, 3)).float()
            union = (pred | truth).sum(dim=(2, 3)).float()
            iou_true = torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))
        if cfg.iou:
            iou_mse = F.mse_loss(iou_pred.float(), iou_true)
            loss = loss + cfg.iou * iou_mse
            logs["iou_mse"] = iou_mse
        out = {
            k: v.reshape(b, -1)[rows, best].mean().detach() if v.dim() else v.detach()
            for k, v in logs.items()
        }
        out["train_iou"] = iou_true[rows, best].mean()
        return loss, out
