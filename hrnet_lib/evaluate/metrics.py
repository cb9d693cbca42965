"""WFLW metrics: inter-ocular NME, failure rate, AUC and the cumulative error curve, per-landmark error,
bootstrap confidence intervals, and the mean-shape baseline (the floor every table is read against).

All functions take numpy arrays or torch tensors and return numpy (float64). Errors are fractions
(multiply by 100 for the percent the tables show).

AUC@t is the area under the cumulative error distribution (CED) F(e) = share of faces with NME <= e,
from e = 0 to e = t, divided by t so that a perfect model scores 1. It is computed exactly:
the integral of a step function F is sum over faces of max(0, t - e_i) / n, so
AUC = mean(max(0, 1 - e_i / t)). The common implementation (trapezoid rule on a 1e-4 grid of
thresholds) approximates this value to within 5e-4.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

#: Outer eye corners of WFLW's 98-point layout: the inter-ocular normaliser.
LEFT_EYE_CORNER, RIGHT_EYE_CORNER = 60, 72


def _numpy(values: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _point_errors(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> np.ndarray:
    """Distance of every point divided by its face's inter-ocular distance: (..., K)."""
    pred, gt = _numpy(pred), _numpy(gt)
    if pred.shape != gt.shape or pred.ndim < 2 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both have shape (..., K, 2), got {pred.shape} and {gt.shape}")
    if gt.shape[-2] <= RIGHT_EYE_CORNER:
        raise ValueError(f"inter-ocular NME needs the 98-point layout, got {gt.shape[-2]} points")
    iod = np.linalg.norm(gt[..., LEFT_EYE_CORNER, :] - gt[..., RIGHT_EYE_CORNER, :], axis=-1)
    if np.any(iod <= 0):
        raise ValueError("a ground-truth face has its eye corners 60 and 72 at the same position")
    return np.linalg.norm(pred - gt, axis=-1) / iod[..., None]


def nme(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> np.ndarray:
    """Per-face NME: mean over the points of ||pred - gt|| / ||gt[60] - gt[72]||; (B, K, 2) -> (B,)."""
    return _point_errors(pred, gt).mean(axis=-1)


def per_landmark_nme(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> np.ndarray:
    """Mean over faces of each point's inter-ocular normalised error; (B, K, 2) -> (K,)."""
    return _point_errors(pred, gt).reshape(-1, _numpy(gt).shape[-2]).mean(axis=0)


def fr_auc(per_face_nme: np.ndarray | Tensor, threshold: float = 0.10) -> tuple[float, float]:
    """Failure rate (share of faces with NME > threshold) and AUC of the CED on [0, threshold],
    normalised to 1 (exact integral, see the module doc)."""
    errors = _numpy(per_face_nme).ravel()
    if errors.size == 0:
        raise ValueError("fr_auc needs at least one face")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    fr = float(np.mean(errors > threshold))
    auc = float(np.mean(np.clip(1.0 - errors / threshold, 0.0, 1.0)))
    return fr, auc


def bootstrap_ci(
    values: np.ndarray | Tensor, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of `values`: per-face NMEs, or the per-face
    differences of two models on the same faces (a paired comparison, far tighter than two intervals).

    It says how far the mean would move with another draw of test faces like these, not with another
    training run (seed-to-seed spread needs several runs). Seeded, so a report is reproducible.
    """
    data = _numpy(values).ravel()
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [  # chunks of 250 resamples keep memory at 250 x n indices
            data[rng.integers(0, data.size, size=(min(250, resamples - start), data.size))].mean(axis=1)
            for start in range(0, resamples, 250)
        ]
    )
    tail = 50 * (1 - confidence)
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def ced(
    per_face_nme: np.ndarray | Tensor, threshold: float = 0.10, steps: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: ``steps + 1`` thresholds evenly from 0 to ``threshold`` and the
    share of faces whose NME is at most each threshold."""
    errors = np.sort(_numpy(per_face_nme).ravel())
    if errors.size == 0:
        raise ValueError("ced needs at least one face")
    thresholds = np.linspace(0.0, threshold, steps + 1)
    fraction = np.searchsorted(errors, thresholds, side="right") / errors.size
    return thresholds, fraction


def mean_shape(landmarks: np.ndarray, centers: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Mean shape in normalised crop coordinates: mean over faces of (landmarks - center) / side.

    ``landmarks`` (N, K, 2) in image pixels; ``centers`` (N, 2) and ``sides`` (N,) or (N, 2) describe
    each face's square crop (the padded crop side in pixels). Returns (K, 2), crop centre at 0.
    """
    landmarks, centers, sides = _numpy(landmarks), _numpy(centers), _numpy(sides)
    sides = sides.reshape(len(sides), -1)
    return ((landmarks - centers[:, None, :]) / sides[:, None, :]).mean(axis=0)


def place_shape(shape: np.ndarray, centers: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Put a normalised shape (K, 2) into each crop: (M, K, 2) image pixels (inverse of ``mean_shape``)."""
    shape, centers, sides = _numpy(shape), _numpy(centers), _numpy(sides)
    sides = sides.reshape(len(sides), -1)
    return centers[:, None, :] + shape[None] * sides[:, None, :]


def mean_shape_baseline(
    train_landmarks: np.ndarray,
    train_centers: np.ndarray,
    train_sides: np.ndarray,
    test_centers: np.ndarray,
    test_sides: np.ndarray,
) -> np.ndarray:
    """Predict every test face as the mean training shape in its crop: (M, K, 2) image pixels.

    The crops must be made the same way for both splits (the evaluation crop: landmark box padded 1.25),
    so the baseline measures what a model gains over knowing only where the crop is.
    """
    return place_shape(mean_shape(train_landmarks, train_centers, train_sides), test_centers, test_sides)
