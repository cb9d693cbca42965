"""The Python API: `Landmarker`, the 98 landmarks of every face in your photos, in a few lines.

    from hrnet_lib import Landmarker
    landmarker = Landmarker("runs/cpu-default/best.pt", device="cpu", flip_test=True)
    for face in landmarker("photo.jpg"):  # or a numpy image (color="rgb" or "bgr"), or a PIL image
        face.landmarks, face.scores, face.box  # (98, 2) photo pixels, (98,) heatmap peaks, (4,) x0 y0 x1 y1

Each face needs a box (see `hrnet_lib.evaluate.boxes` for the rule that turns it into the crop): pass
them, or the detector finds them (OpenCV's bundled Haar cascade by default; any callable from an RGB image
to face boxes (N, 4) with ``detector=``). The faces of several images go through the network together
(`Landmarker.predict`). Crops, flip test, decoding and the map back to the photo are the evaluation's
(`crops_to_landmarks`); ``backend="onnxruntime"`` runs the network in onnxruntime instead of PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from hrnet_lib.data.loader import read_checked_image
from hrnet_lib.device import resolve_device, resolve_precision
from hrnet_lib.evaluate.boxes import PredictError, check_box, crop_faces, haar_face_boxes
from hrnet_lib.evaluate.decode import DECODERS
from hrnet_lib.evaluate.export import checked_onnx
from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.evaluate.report import load_model
from hrnet_lib.model.onnx import OnnxHeatmaps

BACKENDS = ("torch", "onnxruntime")
COLORS = ("rgb", "bgr")


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """One face's result: landmarks (K, 2) float64 in photo pixels, their heatmap scores (K,), and the face
    box (4,) x0 y0 x1 y1 whose crop they came from."""

    landmarks: np.ndarray
    scores: np.ndarray
    box: np.ndarray

    def to_json(self) -> dict[str, list]:
        return {
            "box": self.box.tolist(),
            "landmarks": self.landmarks.tolist(),
            "scores": self.scores.tolist(),
        }


def load_image(image: Any, color: str | None = None, name: str = "the image") -> tuple[np.ndarray, str]:
    """(RGB uint8 (H, W, 3), a name for messages) of a path, a PIL image, or a numpy image of channel order
    `color` ("rgb" or "bgr"; a gray (H, W) image needs none)."""
    if isinstance(image, (str, Path)):
        try:  # the dataset reader's checks: a truncated JPEG is refused, not half grey
            bgr = read_checked_image(Path(image))
        except (ValueError, FileNotFoundError) as error:
            raise PredictError(f"{image}: cannot read image ({error})") from None
        return np.ascontiguousarray(bgr[..., ::-1]), str(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy(), name
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise PredictError(f"{name}: a numpy image must be uint8 (0-255), got {image.dtype}")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2)), name
    if image.ndim != 3 or image.shape[2] != 3:
        raise PredictError(
            f"{name}: expected an (H, W, 3) colour or (H, W) gray image, got shape {image.shape}"
        )
    if color not in COLORS:
        raise PredictError(f"{name}: say the numpy image's channel order with color='rgb' or color='bgr'")
    return np.ascontiguousarray(image[..., ::-1] if color == "bgr" else image), name


class Landmarker:
    """A landmark model loaded once, called on photos: ``landmarker(image, boxes=None)`` -> [FaceLandmarks].

    `model` is a checkpoint path (anything `load_weights` reads: this project's or mmpose's; a file that is
    not a trained landmark model is a ValueError), an ``.onnx`` file from ``python -m hrnet_lib export``,
    or a model (nn.Module) with its `input_size` and `heatmap_size`. `backend` "torch" or "onnxruntime"
    (CPU; a checkpoint is exported in memory and checked as the export command does), default torch, or
    onnxruntime for an .onnx file. `precision` ("auto": bf16 where the device runs it natively) and
    `channels_last` pass through to `crops_to_landmarks`; onnxruntime computes in fp32.
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str = "cpu",
        flip_test: bool = True,
        decoder: str = "standard",
        backend: str | None = None,
        detector: Callable[[np.ndarray], np.ndarray] | None = None,
        batch_size: int = 32,
        input_size: int = 256,
        heatmap_size: int = 64,
        precision: str = "auto",
        channels_last: bool = True,
        threads: int | None = None,
        trust: bool = False,
    ) -> None:
        onnx_file = isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".onnx"
        backend = backend or ("onnxruntime" if onnx_file else "torch")
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: use one of {BACKENDS}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r}: use one of {DECODERS}")
        if onnx_file and backend != "onnxruntime":
            raise ValueError(f"{model}: an ONNX file runs with backend='onnxruntime'")
        self.backend, self.flip_test, self.decoder = backend, bool(flip_test), decoder
        self.detector = detector or haar_face_boxes
        self.batch_size, self.channels_last = int(batch_size), bool(channels_last)
        self.device = resolve_device(device, option="device")
        self.precision = "fp32" if backend == "onnxruntime" else resolve_precision(self.device, precision)
        if backend == "onnxruntime" and self.device.type != "cpu":
            raise ValueError(f"device {device!r}: the onnxruntime backend runs on the CPU")
        self.config = {"input_size": int(input_size), "heatmap_size": int(heatmap_size)}
        self.model = self._load(model, onnx_file, threads, trust)
        self.input_size = int(self.config["input_size"])
        self.heatmap_size = int(self.config["heatmap_size"])

    def _load(
        self, model: str | Path | nn.Module, onnx_file: bool, threads: int | None, trust: bool
    ) -> nn.Module:
        """The network (a torch model on the device, or an onnxruntime session); fills `self.config`."""
        if onnx_file:
            session = OnnxHeatmaps(model, threads)
            missing = [key for key in ("input_size", "heatmap_size") if key not in session.metadata]
            if missing:
                raise ValueError(
                    f"{model}: no {', '.join(missing)} in its metadata; export it with hrnet_lib"
                )
            self.config.update({key: int(session.metadata[key]) for key in ("input_size", "heatmap_size")})
            return session
        if isinstance(model, nn.Module):
            network = model
        else:
            network, config = load_model(model, trust)
            self.config.update(config)
        if self.backend == "onnxruntime":
            data, self.config["onnx_parity"] = checked_onnx(network, self.config, threads)
            return OnnxHeatmaps(data, threads)
        network = network.to(self.device).eval()
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        return network

    def __call__(self, image: Any, boxes: Any = None, color: str | None = None) -> list[FaceLandmarks]:
        """The faces of one image (a path, PIL image, or numpy image with `color`), in `boxes` (4,) or
        (N, 4) x0 y0 x1 y1 photo pixels, or wherever the detector finds them (none found: [])."""
        return self.predict([image], None if boxes is None else [boxes], color)[0]

    def predict(
        self, images: Sequence[Any], boxes: Sequence[Any] | None = None, color: str | None = None
    ) -> list[list[FaceLandmarks]]:
        """The faces of several images, all through the network together: one list per image. `boxes`:
        one entry per image (None for that image: detect)."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} box entries for {len(images)} images: give one per image")
        loaded = [load_image(image, color, f"image {i}") for i, image in enumerate(images)]
        rgb = [image for image, _ in loaded]
        face_boxes = [
            self.face_boxes(image, name, None if boxes is None else boxes[i])
            for i, (image, name) in enumerate(loaded)
        ]
        landmarks, scores = self.landmarks_of_boxes(rgb, face_boxes)
        return [
            [FaceLandmarks(p, s, b) for p, s, b in zip(points, score, box, strict=True)]
            for points, score, box in zip(landmarks, scores, face_boxes, strict=True)
        ]

    def face_boxes(self, image: np.ndarray, name: str, boxes: Any = None) -> np.ndarray:
        """Checked face boxes (N, 4) of an RGB image: the given ones, or the detector's."""
        if boxes is None:
            return np.asarray(self.detector(image), dtype=np.float64).reshape(-1, 4)
        boxes = np.asarray(boxes, dtype=np.float64)
        boxes = boxes.reshape(1, -1) if boxes.ndim == 1 else boxes
        for box in boxes:
            check_box(box, image.shape[1], image.shape[0], name)
        return boxes.reshape(-1, 4)

    def landmarks_of_boxes(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Landmarks (N_i, K, 2) and scores (N_i, K) of face boxes (N_i, 4) on RGB images, in batches of
        `batch_size` faces across the images."""
        parts = [crop_faces(image, box, self.input_size) for image, box in zip(images, boxes, strict=True)]
        crops = np.concatenate([p[0] for p in parts])
        centers = np.concatenate([p[1] for p in parts])
        scales = np.concatenate([p[2] for p in parts])
        landmarks, scores = [], []
        for start in range(0, len(crops), self.batch_size):
            part = slice(start, start + self.batch_size)
            points, score = crops_to_landmarks(
                self.model,
                self.device,
                torch.from_numpy(crops[part]),
                centers[part],
                scales[part],
                self.input_size,
                self.heatmap_size,
                self.flip_test,
                self.decoder,
                precision=self.precision,
                channels_last=self.channels_last,
            )
            landmarks.append(points)
            scores.append(score)
        if not landmarks:
            count = int(self.config.get("num_keypoints", 98))
            return [np.zeros((0, count, 2)) for _ in images], [np.zeros((0, count)) for _ in images]
        ends = np.cumsum([len(b) for b in boxes])[:-1]
        return np.split(np.concatenate(landmarks), ends), np.split(np.concatenate(scores), ends)


def draw_faces(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of a BGR image with each face box (thin) and its landmarks (filled dots)."""
    canvas = image.copy()
    for box, points in zip(boxes, landmarks, strict=True):
        side = max(box[2] - box[0], box[3] - box[1])
        radius = max(1, round(side / 80))
        x0, y0, x1, y1 = np.round(box).astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 200, 0), max(1, radius // 2), cv2.LINE_AA)
        for x, y in points:
            cv2.circle(canvas, (round(x), round(y)), radius, (0, 255, 0), -1, cv2.LINE_AA)
    return canvas
