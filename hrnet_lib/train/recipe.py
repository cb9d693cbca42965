"""The recipe's learning-rate schedule and training losses (mmpose's, FACTS.md)."""

from __future__ import annotations

import torch
from torch import Tensor

from hrnet_lib.train.presets import TrainConfig


def lr_at(iteration: int, iters_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step `iteration` (0-based), mmpose's schedule.

    Step decay by epoch: lr x gamma for every milestone epoch reached (epoch = iteration // iters_per_epoch,
    0-based, so x0.1 from the first step of epoch 40). Linear warm-up on top, as mmengine's LinearLR moves
    it: the factor goes from `warmup_ratio` at step 0 to 1 at step `warmup_iters` - 1 in equal steps.
    """
    epoch = iteration // iters_per_epoch
    lr = cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if iteration < cfg.warmup_iters - 1:
        lr *= cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * iteration / (cfg.warmup_iters - 1)
    elif iteration < cfg.warmup_iters:  # a warm-up of one step: only step 0, at the ratio
        lr *= cfg.warmup_ratio if cfg.warmup_iters == 1 else 1.0
    return lr


def heatmap_loss(pred: Tensor, target: Tensor, weight: Tensor, kind: str = "mse") -> Tensor:
    """The training loss of `kind`, mean over all heatmap pixels, with per-keypoint target weights w.

    "mse": mmpose's JointsMSELoss, the mean of ((pred - gt) * w)^2 (mmpose averages the per-keypoint MSE of
    pred*w against gt*w over keypoints, which is this mean; the 0.5 factor of the original HRNet code is
    not in mmpose). "awing": mmpose's AdaptiveWingLoss with its defaults, `adaptive_wing(pred*w, gt*w)`
    (its published WFLW row: 4.02).
    """
    w = weight[:, :, None, None]
    if kind == "awing":
        return adaptive_wing(pred.float() * w, target * w).mean()
    return ((pred.float() - target) * w).pow(2).mean()


def adaptive_wing(
    pred: Tensor,
    target: Tensor,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> Tensor:
    """Adaptive Wing loss of each heatmap pixel (Wang et al., ICCV 2019), with mmpose's default constants.

    For the error d = |gt - pred| and the exponent p = alpha - gt: omega * ln(1 + (d / epsilon)^p) below
    theta, and the tangent line A * d - C of that curve at d = theta above it, so the loss and its slope are
    continuous. Near a peak (gt about 1, p about 1.1) small errors still have a steep gradient, where MSE's
    vanishes; in the background (gt = 0, p = 2.1) it behaves like MSE.
    """
    delta = (target - pred).abs()
    power = alpha - target
    ratio = theta / epsilon
    slope = omega / (1 + ratio**power) * power * ratio ** (power - 1) / epsilon
    offset = theta * slope - omega * torch.log1p(ratio**power)
    return torch.where(delta < theta, omega * torch.log1p((delta / epsilon) ** power), slope * delta - offset)
