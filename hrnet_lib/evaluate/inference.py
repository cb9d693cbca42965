"""Face crops to landmarks in image pixels: the one inference path of validation, evaluation and predict.

Normalise (uint8 crops), lay out channels_last and autocast to bf16 where the device runs it natively,
predict heatmaps (with the flip test), decode them in fp32 where they were computed, and map the keypoints
back through each face's crop.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from hrnet_lib.data.loader import normalize_images
from hrnet_lib.device import autocast
from hrnet_lib.evaluate.decode import decode_heatmaps, predict_heatmaps, to_image_pixels


def crops_to_landmarks(
    model: nn.Module,
    device: torch.device,
    images: Tensor,
    centers: np.ndarray,
    scales: np.ndarray,
    input_size: int,
    heatmap_size: int,
    flip: bool = True,
    decoder: str = "standard",
    precision: str = "auto",
    channels_last: bool = True,
    rotations: np.ndarray | None = None,
    pad_to: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (N, K, 2) in image pixels and their heatmap scores (N, K) of N face crops.

    `model` lives on `device`; `images` are uint8 RGB crops (normalised there) or normalised float crops;
    `centers`, `scales` (N, 2) and `rotations` (N,) describe each crop in its image. `precision` is one of
    `device.PRECISIONS` ("auto": bf16 where `device` runs it natively). A batch shorter than `pad_to` is
    padded with zeros, so every call runs one input shape (a new shape costs a GPU an algorithm search).
    """
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize_images(images)
    count = len(images)
    if count < pad_to:
        images = torch.cat([images, images.new_zeros((pad_to - count, *images.shape[1:]))])
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        heatmaps = predict_heatmaps(model, images, flip=flip)[:count]
    keypoints, scores = (t.cpu().numpy() for t in decode_heatmaps(heatmaps, decoder))
    landmarks = to_image_pixels(keypoints, centers, scales, input_size, heatmap_size, rotations)
    return landmarks, scores
