"""Stand-in models shared by the evaluation tests: known heatmaps whatever the image, and a small random
checkpoint with trained-like output magnitudes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class OracleHeatmaps(nn.Module):
    """Ignores the image: heatmap k peaks at the integer position peaks[k] with equal neighbours, so the
    standard decoder returns exactly peaks[k]."""

    def __init__(self, peaks: np.ndarray, size: int) -> None:
        super().__init__()
        maps = torch.zeros(len(peaks), size, size)
        for k, (x, y) in enumerate(peaks):
            maps[k, y, x] = 1.0
            maps[k, y, x - 1] = maps[k, y, x + 1] = maps[k, y - 1, x] = maps[k, y + 1, x] = 0.5
        self.register_buffer("maps", maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(len(x), -1, -1, -1).clone()


def small_checkpoint(path, input_size: int = 64, heatmap_size: int = 16, seed: int = 0):
    """A project checkpoint of HRNetV2-W18-small-v2 with random weights whose BatchNorm statistics are
    those of random images, so its heatmaps have trained-like magnitudes (not the near-zero, denormal
    outputs of a fresh initialisation); returns (path, model in eval mode)."""
    from hrnet_lib.model.hrnet import build_model
    from hrnet_lib.model.inference import calibrate_batchnorm

    torch.manual_seed(seed)
    model = build_model("hrnetv2_w18_small_v2", num_keypoints=98)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, 1 / module.weight[0].numel() ** 0.5)
    calibrate_batchnorm(model, torch.randn(4, 3, input_size, input_size))
    config = {"model": "hrnetv2_w18_small_v2", "num_keypoints": 98, "upsample": "bilinear"}
    config |= {"input_size": input_size, "heatmap_size": heatmap_size}
    torch.save({"model": model.state_dict(), "config": config}, path)
    return path, model
