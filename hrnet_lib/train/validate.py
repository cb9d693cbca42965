"""Validation during training: the mean NME of the held-out faces, through the one inference path."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.evaluate.metrics import nme
from hrnet_lib.train.presets import TrainConfig


@torch.no_grad()
def validate(
    model: nn.Module, batches: Iterable[dict[str, Tensor]], cfg: TrainConfig, device: torch.device
) -> float:
    """Mean inter-ocular NME (fraction) of `model` over validation `batches` (in image pixels).

    Every batch is padded to `cfg.val_batch`, so each call runs the training step's input shape. It runs
    eagerly: modules compiled in place (`compile=modules`) would otherwise compile again for evaluation.
    """
    errors = []
    with torch.compiler.set_stance("force_eager"):
        for batch in batches:
            pred, _ = crops_to_landmarks(
                model,
                device,
                batch["image"],
                batch["center"].numpy(),
                batch["scale"].numpy(),
                cfg.input_size,
                cfg.heatmap_size,
                flip=cfg.val_flip,
                decoder="dark" if cfg.unbiased else "standard",
                precision=cfg.precision,
                channels_last=cfg.channels_last,
                rotations=batch["rotation"].numpy(),
                pad_to=cfg.val_batch,
            )
            errors.append(nme(pred, batch["landmarks"].numpy().astype(np.float64)))
    return float(np.concatenate(errors).mean())
