"""From heatmaps to landmark coordinates: mmpose's standard decoder, DARK, and the flip test.

Coordinates are in heatmap pixels, x then y, with pixel centres at integer positions (the argmax of
a heatmap is an integer position). Multiply by the stride (input size / heatmap size, 4 for 256 -> 64)
to get input pixels, then apply the inverse crop transform to get image pixels.

The standard decoder is mmpose's (``get_heatmap_maximum`` + ``refine_keypoints``), which produced the
published 4.06: the first maximum in row-major order; a maximum at or below zero gives the position
(-1, -1) and is not refined; otherwise x moves 0.25 px toward its larger horizontal neighbour when
1 < x < W - 1 and 0 < y, and y 0.25 px toward its larger vertical neighbour when 1 < y < H - 1 and
0 < x (each axis on its own; equal neighbours give no step; so a maximum in row 0 or column 0 is
refined along neither axis).

DARK (Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose Estimation", CVPR
2020) starts from the same maximum, smooths the heatmap with a Gaussian (zero border, rescaled to keep
its maximum), takes the logarithm, and moves by one Newton step ``-H^-1 g`` of a second-order Taylor
expansion, with the gradient and Hessian taken by central differences at the maximum (needs two pixels
of margin; at the margin, or with a singular Hessian, the maximum is kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

DECODERS = ("standard", "dark")


def decode_heatmaps(
    heatmaps: Tensor | np.ndarray, decoder: str = "standard", blur_kernel: int = 11
) -> tuple[Tensor | np.ndarray, Tensor | np.ndarray]:
    """Decode (B, K, H, W) heatmaps to keypoints (B, K, 2) in heatmap pixels and scores (B, K).

    The score is the heatmap's maximum. Returns the type of the input (numpy arrays for numpy, float32
    tensors on the input's device for torch). The standard decoder runs where the heatmaps are, so on a
    GPU only the keypoints cross to the host (a validation batch of 512 faces has 820 MB of float32
    heatmaps); DARK runs on the CPU. ``blur_kernel`` is DARK's modulation kernel: 11 matches training
    targets of sigma 2 (mmpose: 11 for sigma 2, 17 for sigma 3).
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
    is_tensor = isinstance(heatmaps, Tensor)
    if is_tensor:
        hm = heatmaps.detach().float()
    else:  # read only, never written: a float32 C-contiguous array is shared, not copied
        hm = torch.from_numpy(np.require(heatmaps, np.float32, ["C", "W"]))
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must have shape (B, K, H, W), got {tuple(hm.shape)}")
    keypoints, scores = heatmap_maximum(hm)
    if decoder == "standard":
        keypoints = refine_quarter(keypoints, hm)
    else:
        dark = refine_dark(keypoints.cpu().numpy(), hm.cpu().numpy(), blur_kernel)
        keypoints = torch.from_numpy(dark).to(hm.device)
    if is_tensor:
        return keypoints, scores
    return keypoints.numpy(), scores.numpy()


def heatmap_maximum(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Integer (x, y) of each heatmap's first maximum (row-major), and its value; (-1, -1) where the
    maximum is <= 0, as mmpose does. Float32 tensors on the heatmaps' device."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    index = flat.argmax(dim=-1)  # torch documents the first maximal index, as numpy's argmax
    scores = flat.gather(-1, index[..., None])[..., 0]
    keypoints = torch.stack([index % w, index // w], dim=-1).float()
    keypoints[scores <= 0] = -1
    return keypoints, scores


def refine_quarter(keypoints: Tensor, heatmaps: Tensor) -> Tensor:
    """mmpose's quarter-pixel step toward the larger neighbour, x and y separately (see module doc)."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    x = keypoints[..., 0].long()
    y = keypoints[..., 1].long()

    def at(ox: int, oy: int) -> Tensor:  # heatmaps[b, k, y + oy, x + ox], clipped into the map
        index = (y + oy).clamp(0, h - 1) * w + (x + ox).clamp(0, w - 1)
        return flat.gather(-1, index[..., None])[..., 0]

    zero = torch.zeros((), dtype=heatmaps.dtype, device=heatmaps.device)
    # mmpose's bounds, which also leave the (-1, -1) of a non-positive maximum alone
    dx = torch.where((x > 1) & (x < w - 1) & (y > 0) & (y < h), at(1, 0) - at(-1, 0), zero)
    dy = torch.where((y > 1) & (y < h - 1) & (x > 0) & (x < w), at(0, 1) - at(0, -1), zero)
    return keypoints + 0.25 * torch.stack([dx.sign(), dy.sign()], dim=-1)


def _sample(heatmaps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """heatmaps[b, k, y, x] for integer (B, K) position arrays, clipped into the map."""
    b, k, h, w = heatmaps.shape
    bi, ki = np.meshgrid(np.arange(b), np.arange(k), indexing="ij")
    return heatmaps[bi, ki, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]


def gaussian_modulation(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK's modulation: blur each heatmap with a ``kernel``-sized Gaussian (OpenCV's sigma for that
    size, 2.0 for 11) over a zero border, then rescale so each map keeps its original maximum."""
    if kernel % 2 != 1:
        raise ValueError(f"blur kernel must be odd, got {kernel}")
    b, k, h, w = heatmaps.shape
    g = torch.from_numpy(cv2.getGaussianKernel(kernel, 0).astype(np.float32).ravel())
    maps = torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32)).reshape(b * k, 1, h, w)
    pad = kernel // 2
    maps = nn.functional.conv2d(maps, g.view(1, 1, 1, kernel), padding=(0, pad))
    maps = nn.functional.conv2d(maps, g.view(1, 1, kernel, 1), padding=(pad, 0))
    blurred = maps.reshape(b, k, h, w).numpy()
    old_max = heatmaps.reshape(b, k, -1).max(axis=-1)
    new_max = blurred.reshape(b, k, -1).max(axis=-1)
    ratio = np.divide(old_max, new_max, out=np.ones_like(old_max), where=new_max != 0)
    return blurred * ratio[..., None, None]


def refine_dark(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel: int = 11) -> np.ndarray:
    """DARK refinement of integer maxima: Newton step on the modulated log-heatmap (see module doc)."""
    h, w = heatmaps.shape[-2:]
    logmap = np.log(np.maximum(gaussian_modulation(heatmaps, blur_kernel), 1e-10))
    x = keypoints[..., 0].astype(np.int64)
    y = keypoints[..., 1].astype(np.int64)

    def at(ox: int, oy: int) -> np.ndarray:
        return _sample(logmap, x + ox, y + oy).astype(np.float64)

    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    hyy = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    inside = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe = np.where(inside, det, 1.0)
    step_x = -(hyy * gx - hxy * gy) / safe
    step_y = -(hxx * gy - hxy * gx) / safe
    step = np.where(inside[..., None], np.stack([step_x, step_y], axis=-1), 0.0)
    return (keypoints + step).astype(np.float32)


def to_image_pixels(
    keypoints: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    input_size: int,
    heatmap_size: int,
    rotations: np.ndarray | None = None,
) -> np.ndarray:
    """Decoded keypoints (N, K, 2) in heatmap pixels -> image pixels (float64): times the stride, then
    through the inverse of each face's crop (centre and scale (N, 2) in image pixels, rotation (N,) in
    degrees, 0 when None)."""
    from hrnet_lib.data.transforms import invert_affine, transform_points, warp_matrix

    stride = input_size / heatmap_size
    size = (input_size, input_size)
    rotations = np.zeros(len(keypoints)) if rotations is None else rotations
    return np.stack(
        [
            transform_points(k.astype(np.float64) * stride, invert_affine(warp_matrix(c, s, float(r), size)))
            for k, c, s, r in zip(keypoints, centers, scales, rotations, strict=True)
        ]
    )


def predict_heatmaps(
    model: nn.Module, images: Tensor, flip: bool = True, flip_indices: Sequence[int] | None = None
) -> Tensor:
    """Heatmaps (B, K, h, w) of normalised images (B, 3, S, S), with mmpose's flip test when ``flip``.

    Flip test: the model also sees the horizontally mirrored images, and their heatmaps, brought back by
    `flip_back`, are averaged with the plain heatmaps. Runs in inference mode with the model in eval mode
    (its previous mode is restored). Returns float32.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            heatmaps = model(images).float()
            if not flip:
                return heatmaps
            return (heatmaps + flip_back(model(images.flip(-1)).float(), flip_indices)) * 0.5
    finally:
        model.train(was_training)


def flip_back(heatmaps: Tensor, flip_indices: Sequence[int] | None = None) -> Tensor:
    """The heatmaps (B, K, h, w) of mirrored images brought back onto the original, as mmpose's flip test
    does: mirrored left-right, channels re-paired (``flip_indices``, default the WFLW flip permutation for
    K points) and shifted one pixel right (column 0 keeps its value)."""
    if flip_indices is None:
        from hrnet_lib.data.transforms import flip_permutation

        flip_indices = flip_permutation(heatmaps.shape[1])
    index = torch.as_tensor(np.asarray(flip_indices), dtype=torch.long, device=heatmaps.device)
    mirrored = heatmaps.flip(-1).index_select(1, index)
    mirrored[..., 1:] = mirrored[..., :-1].clone()
    return mirrored
