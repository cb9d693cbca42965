"""Gaussian heatmap targets (mmpose `MSEHeatmap` codec), vectorised over keypoints."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    left, top = (mu - radius).T
    right, bottom = (mu + radius + 1).T
    if not unbiased:
        left, top, right, bottom = (np.trunc(v) for v in (left, top, right, bottom))
    visible = ~((left >= width) | (top >= height) | (right < 0) | (bottom < 0))
    weights = visible.astype(np.float32)
    gx = gx.astype(np.float32) * weights[:, None]
    # separable: gy * gx = exp(-(dx^2 + dy^2) / 2 sigma^2)
    heatmaps = gy.astype(np.float32)[:, :, None] * gx[:, None, :]
    return heatmaps, weights
