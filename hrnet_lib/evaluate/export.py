"""`python -m hrnet_lib export --checkpoint C --out model.onnx`: the model as ONNX, checked, then written.

The graph maps crops to heatmaps (see `hrnet_lib.model.onnx`). Before writing, onnxruntime runs it on
synthetic face crops beside PyTorch, and the export is refused unless every face's heatmaps agree within
``HEATMAP_TOLERANCE`` of its peak value and the landmarks decoded from them (flip test, standard decoder,
mapped to the photo) within ``LANDMARK_TOLERANCE_PX`` pixels. The check runs a batch of another size than
the export's example input, so the dynamic batch axis is checked too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hrnet_lib.data.loader import normalize_images
from hrnet_lib.data.synthetic import draw_face
from hrnet_lib.evaluate.boxes import crop_faces, landmark_box
from hrnet_lib.evaluate.decode import predict_heatmaps
from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.io import atomic_bytes, prepare_output
from hrnet_lib.model.onnx import METADATA_KEYS, OPSET, OnnxHeatmaps, export_onnx, heatmap_difference

HEATMAP_TOLERANCE = 1e-4  # of each face's peak heatmap value
LANDMARK_TOLERANCE_PX = 0.01  # decoded landmarks, photo pixels
CHECK_FACES = 3


class ExportError(ValueError):
    """An export whose onnxruntime outputs do not match PyTorch's; nothing was written."""


def check_faces(input_size: int, count: int = CHECK_FACES) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """`count` synthetic faces cropped as at evaluation: uint8 RGB crops (N, 3, S, S), centres and scales."""
    crops, centers, scales = [], [], []
    for seed in range(count):
        image, drawn, _ = draw_face(seed, size=(2 * input_size, 2 * input_size))
        crop, center, scale = crop_faces(
            image[..., ::-1].copy(), landmark_box(drawn.landmarks)[None], input_size
        )
        crops.append(crop)
        centers.append(center)
        scales.append(scale)
    return torch.from_numpy(np.concatenate(crops)), np.concatenate(centers), np.concatenate(scales)


def parity(model: nn.Module, session: nn.Module, input_size: int, heatmap_size: int) -> dict[str, Any]:
    """How far onnxruntime (`session`) is from PyTorch (`model`, on the CPU) on `check_faces`: the largest
    heatmap difference over a face's peak, and the largest landmark difference in photo pixels."""
    crops, centers, scales = check_faces(input_size)
    images = normalize_images(crops)
    reference = predict_heatmaps(model, images, flip=False).numpy()
    other = predict_heatmaps(session, images, flip=False).numpy()
    device = torch.device("cpu")
    args = (crops, centers, scales, input_size, heatmap_size, True, "standard", "fp32", False)
    truth, _ = crops_to_landmarks(model, device, *args)
    landmarks, _ = crops_to_landmarks(session, device, *args)
    return {
        "faces": len(crops),
        "heatmap_max_diff_over_peak": float(heatmap_difference(reference, other).max()),
        "landmark_max_diff_px": float(np.abs(truth - landmarks).max()),
        "heatmap_tolerance": HEATMAP_TOLERANCE,
        "landmark_tolerance_px": LANDMARK_TOLERANCE_PX,
    }


def checked_onnx(model: nn.Module, config: dict[str, Any], threads: int | None = None) -> tuple[bytes, dict]:
    """The ONNX bytes of a loaded model (settings `config` as `load_model` returns them) and their parity
    record; `ExportError` when onnxruntime's outputs are not within the tolerances."""
    model = model.to("cpu").eval()
    metadata = {key: config[key] for key in METADATA_KEYS if key in config}
    data = export_onnx(model, int(config["input_size"]), metadata | {"opset": OPSET})
    record = parity(
        model, OnnxHeatmaps(data, threads), int(config["input_size"]), int(config["heatmap_size"])
    )
    heatmaps, landmarks = record["heatmap_max_diff_over_peak"], record["landmark_max_diff_px"]
    if not (heatmaps <= HEATMAP_TOLERANCE and landmarks <= LANDMARK_TOLERANCE_PX):
        raise ExportError(
            f"onnxruntime does not reproduce PyTorch on {record['faces']} synthetic faces: heatmaps "
            f"differ by {heatmaps:.2e} of the peak (tolerance {HEATMAP_TOLERANCE:g}), landmarks by "
            f"{landmarks:.4f} px (tolerance {LANDMARK_TOLERANCE_PX:g}); nothing written"
        )
    return data, record


def export(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Load a checkpoint (anything `load_model` reads), export it, check it, write it atomically to `out`."""
    from hrnet_lib.evaluate.report import load_model

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: name the .onnx file to write")
    prepare_output(out)
    model, config = load_model(checkpoint)
    data, record = checked_onnx(model, config)
    atomic_bytes(out, data)
    return record | {"opset": OPSET, "bytes": len(data)}


def main(argv: list[str]) -> int:
    """Entry point of `python -m hrnet_lib export`; returns the exit status (0 ok, 1 a clear error)."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnet_lib export",
        description="Export a landmark checkpoint to ONNX (crops -> heatmaps, dynamic batch), checked "
        "against PyTorch with onnxruntime before it is written.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="project checkpoint or mmpose .pth")
    parser.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    args = parser.parse_args(argv)
    try:
        record = export(args.checkpoint, args.out)
    except (ExportError, FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out} (opset {record['opset']}, {record['bytes'] / 2**20:.1f} MiB); onnxruntime vs "
        f"PyTorch on {record['faces']} synthetic faces: heatmaps within "
        f"{record['heatmap_max_diff_over_peak']:.1e} of the peak, landmarks within "
        f"{record['landmark_max_diff_px']:.5f} px"
    )
    return 0
