"""Geometry of WFLW face crops: the flip-pair table, the crop box, the mmpose crop affine and augmentation.

The crop convention is mmpose 1.x's `get_warp_matrix` (centre and scale in image pixels, no shift, fixed
aspect ratio), so weights trained with mmpose evaluate correctly on crops made here and vice versa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Horizontal flip pairs of the 98 WFLW landmarks (0-based), as in the official layout.
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    *((i, 32 - i) for i in range(16)),
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),
    (55, 59), (56, 58),
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),
    (76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97),
)  # fmt: skip

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


def flip_permutation(num_keypoints: int = 98) -> np.ndarray:
    """Index array `p` with `flipped[k] = original[p[k]]`: a left point takes its right partner's place."""
    perm = np.arange(num_keypoints)
    for a, b in FLIP_PAIRS:
        if max(a, b) >= num_keypoints:
            raise ValueError(f"flip pair ({a}, {b}) does not fit {num_keypoints} keypoints")
        perm[a], perm[b] = b, a
    return perm


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Mirror landmarks (K, 2) of an image `width` pixels wide: x -> width - 1 - x, then re-pair left/right.

    `width - 1 - x` is exact for cv2's convention (pixel centres at integers), as mmpose's `flip_keypoints`.
    """
    landmarks = np.asarray(landmarks)
    flipped = landmarks.copy()
    flipped[..., 0] = width - 1 - landmarks[..., 0]
    return flipped[..., flip_permutation(landmarks.shape[-2]), :]


def flip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an (H, W, ...) image left-right (contiguous copy)."""
    return np.ascontiguousarray(image[:, ::-1])


def flip_matrix(width: int) -> np.ndarray:
    """(2, 3) affine of the mirror x -> width - 1 - x (compose with a crop to warp a flipped image)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def face_box(landmarks: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Square crop box around the landmarks' extent: centre (2,), scale (2,) = max(w, h) * padding (px)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = float((high - low).max()) * padding
    return (low + high) / 2.0, np.array([side, side])


def _rotate(point: np.ndarray, angle_rad: float) -> np.ndarray:
    sin, cos = np.sin(angle_rad), np.cos(angle_rad)
    return np.array([point[0] * cos - point[1] * sin, point[0] * sin + point[1] * cos])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point that makes (a, b, c) a right angle at b: b plus (a - b) turned by 90 degrees."""
    d = a - b
    return b + np.array([-d[1], d[0]])


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) float64 affine mapping three src points (3, 2) onto three dst points, solved in float64."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    lhs = np.concatenate([src, np.ones((3, 1))], axis=1)  # rows [x, y, 1]
    return np.linalg.solve(lhs, dst).T


def warp_matrix(
    center: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    rotation_deg: float,
    output_size: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """(2, 3) float64 affine image -> crop pixels; mmpose 1.x `get_warp_matrix` (shift 0, fixed aspect).

    `center` and `scale` are in image pixels, (w, h) order; only the width of `scale` matters (fixed aspect
    ratio). The box centre lands at (out_w / 2, out_h / 2); the content is rotated by `rotation_deg` (positive
    turns the image content counter-clockwise as displayed, y pointing down). mmpose rounds its three points
    to float32; this computes in float64, so the two agree to about 1e-4 pixel.
    """
    return affine_from_points(*warp_points(center, scale, rotation_deg, output_size))


def warp_points(
    center: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    rotation_deg: float,
    output_size: Sequence[int] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The three point pairs (src (3, 2) in the image, dst (3, 2) in the crop) that fix `warp_matrix`:
    the box centre, the middle of its left edge (turned by the rotation), and the point that makes a
    right angle with them (the first two turned by 90 degrees about the second)."""
    center = np.asarray(center, dtype=np.float64)
    src_w = float(np.asarray(scale, dtype=np.float64)[0])
    dst_w, dst_h = (float(v) for v in np.asarray(output_size)[:2])
    src = np.zeros((3, 2))
    dst = np.zeros((3, 2))
    src[0] = center
    src[1] = center + _rotate(np.array([-0.5 * src_w, 0.0]), np.deg2rad(rotation_deg))
    src[2] = _third_point(src[0], src[1])
    dst[0] = (0.5 * dst_w, 0.5 * dst_h)
    dst[1] = dst[0] + np.array([-0.5 * dst_w, 0.0])
    dst[2] = _third_point(dst[0], dst[1])
    return src, dst


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (..., 2); returns float64."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine of `outer` applied after `inner`."""
    outer3 = np.vstack([outer, [0.0, 0.0, 1.0]])
    inner3 = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (outer3 @ inner3)[:2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine, float64."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


@dataclass
class Augment:
    """Training augmentation of the published mmpose WFLW recipe (flip, scale, rotation; no shift)."""

    flip_prob: float = 0.5
    scale_sigma: float = 0.25
    scale_range: tuple[float, float] = (0.75, 1.25)
    rot_sigma: float = 30.0
    rot_max: float = 60.0
    rot_prob: float = 0.6


def random_augment(rng: np.random.Generator, aug: Augment) -> tuple[bool, float, float]:
    """Draw (flip, scale_factor, rotation_deg) of one sample.

    scale = clip(1 + scale_sigma N, *scale_range); rotation = clip(rot_sigma N, +-rot_max) with probability
    rot_prob, else 0. Always consumes the same number of draws, so later draws do not shift.
    """
    flip = bool(rng.random() < aug.flip_prob)
    scale_factor = float(np.clip(1.0 + aug.scale_sigma * rng.standard_normal(), *aug.scale_range))
    rotation = float(np.clip(aug.rot_sigma * rng.standard_normal(), -aug.rot_max, aug.rot_max))
    if rng.random() >= aug.rot_prob:
        rotation = 0.0
    return flip, scale_factor, rotation
