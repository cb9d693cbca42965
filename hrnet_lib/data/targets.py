"""Gaussian heatmap targets (mmpose `MSEHeatmap` codec), vectorised over keypoints."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _axis_profile(mu: np.ndarray, length: int, sigma: float, radius: float) -> np.ndarray:
    """(K, length) 1-D Gaussian factors on one axis for integer centres `mu`, cut to mmpose's patch.

    mmpose pastes a (2r+1)-wide Gaussian patch whose column `left = trunc(mu - r)` holds its first sample;
    the value at coordinate c is the patch sample `c - left - size // 2`, i.e. exp(-(c - mu)^2 / 2 sigma^2)
    whenever 3 sigma is an integer (sigma = 2 gives r = 6).
    """
    size = 2 * radius + 1
    left = np.trunc(mu - radius).astype(np.int64)[:, None]
    right = np.trunc(mu + radius + 1).astype(np.int64)[:, None]
    coords = np.arange(length)[None, :]
    offset = (coords - left - size // 2).astype(np.float64)
    inside = (coords >= left) & (coords < right)
    return np.where(inside, np.exp(-(offset**2) / (2.0 * sigma**2)), 0.0)


def encode_heatmaps(
    keypoints: np.ndarray,
    heatmap_size: Sequence[int] = (64, 64),
    sigma: float = 2.0,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (K, 2) in heatmap pixels -> heatmaps (K, H, W) float32 and weights (K,) float32.

    Default: mmpose MSEHeatmap, a Gaussian with peak 1 at the rounded position int(x + 0.5) inside a square
    patch of radius 3 sigma; weight 0 when that patch lies outside the heatmap (mmpose's test: left >= W,
    top >= H, right < 0 or bottom < 0). `unbiased=True` is DARK's encoding: an untruncated Gaussian at the
    exact sub-pixel position, weight 0 under the same test without rounding.
    `heatmap_size` is (W, H) as in mmpose.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 2:
        raise ValueError(f"keypoints must be (K, 2), got {keypoints.shape}")
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    radius = 3.0 * sigma
    if unbiased:
        mu = keypoints
        xs = np.arange(width, dtype=np.float64)[None, :] - mu[:, :1]
        ys = np.arange(height, dtype=np.float64)[None, :] - mu[:, 1:]
        gx = np.exp(-(xs**2) / (2.0 * sigma**2))
        gy = np.exp(-(ys**2) / (2.0 * sigma**2))
    else:
        mu = np.trunc(keypoints + 0.5)  # mmpose: (keypoints + 0.5).astype(int64)
        gx = _axis_profile(mu[:, 0], width, sigma, radius)
        gy = _axis_profile(mu[:, 1], height, sigma, radius)
    weights = heatmap_weights(keypoints, heatmap_size, sigma, unbiased)
    gx = gx.astype(np.float32) * weights[:, None]
    # separable: gy * gx = exp(-(dx^2 + dy^2) / 2 sigma^2)
    heatmaps = gy.astype(np.float32)[:, :, None] * gx[:, None, :]
    return heatmaps, weights


def heatmap_weights(
    keypoints: np.ndarray, heatmap_size: Sequence[int] = (64, 64), sigma: float = 2.0, unbiased: bool = False
) -> np.ndarray:
    """The weights (K,) float32 of `encode_heatmaps` alone: 0 where the Gaussian patch is off the heatmap."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    radius = 3.0 * sigma
    mu = keypoints if unbiased else np.trunc(keypoints + 0.5)
    left, top = (mu - radius).T
    right, bottom = (mu + radius + 1).T
    if not unbiased:
        left, top, right, bottom = (np.trunc(v) for v in (left, top, right, bottom))
    visible = ~((left >= width) | (top >= height) | (right < 0) | (bottom < 0))
    return visible.astype(np.float32)


def encode_heatmaps_torch(
    keypoints: torch.Tensor,
    heatmap_size: Sequence[int] = (64, 64),
    sigma: float = 2.0,
    unbiased: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`encode_heatmaps` for a batch on any device: keypoints (..., K, 2) -> heatmaps (..., K, H, W), weights.

    Training encodes its targets on the GPU with this, so the data workers ship 98 x 2 numbers a face
    instead of 98 x 64 x 64 (1.6 MB a face at 256 px input, the largest share of what a step moves).
    Same values as `encode_heatmaps` up to float32 rounding (relative 1e-5: float32 arithmetic, not float64).
    """
    keypoints = keypoints.float()
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    radius = 3.0 * sigma
    device = keypoints.device
    xs = torch.arange(width, device=device, dtype=torch.float32)
    ys = torch.arange(height, device=device, dtype=torch.float32)
    if unbiased:
        mu = keypoints
        gx = torch.exp(-((xs - mu[..., :1]) ** 2) / (2.0 * sigma**2))
        gy = torch.exp(-((ys - mu[..., 1:]) ** 2) / (2.0 * sigma**2))
        left, top = (mu - radius).unbind(-1)
        right, bottom = (mu + radius + 1).unbind(-1)
    else:
        mu = torch.trunc(keypoints + 0.5)
        left, top = torch.trunc(mu - radius).unbind(-1)
        right, bottom = torch.trunc(mu + radius + 1).unbind(-1)
        gx = _axis_profile_torch(xs, left, right, 2 * radius + 1, sigma)
        gy = _axis_profile_torch(ys, top, bottom, 2 * radius + 1, sigma)
    visible = ~((left >= width) | (top >= height) | (right < 0) | (bottom < 0))
    weights = visible.float()
    heatmaps = gy[..., :, None] * (gx * weights[..., None])[..., None, :]
    return heatmaps, weights


def _axis_profile_torch(
    coords: torch.Tensor, first: torch.Tensor, end: torch.Tensor, size: float, sigma: float
) -> torch.Tensor:
    """`_axis_profile` in torch: patch samples `c - first - size // 2` inside [first, end), 0 outside."""
    offset = coords - first[..., None] - size // 2
    inside = (coords >= first[..., None]) & (coords < end[..., None])
    return torch.where(inside, torch.exp(-(offset**2) / (2.0 * sigma**2)), torch.zeros_like(offset))
