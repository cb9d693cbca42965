"""98 landmarks on any photo.

`python -m hrnet_lib predict IMAGE --checkpoint CKPT [--box x0 y0 x1 y1] --out OUT.png`

Each face needs a box: given with ``--box`` (a tight face box, brows to chin and ear to ear, like the
box around WFLW's landmarks), or found with OpenCV's bundled Haar frontal-face cascade. A Haar box is
not a landmark box: it reaches higher (forehead) and not as low (chin). On the three real faces of
the wflw-mini fixture that the cascade finds (OpenCV 4.14, default parameters below), the landmark
box's side is 0.87-0.90 of the Haar box's and its centre lies 0.07-0.17 of a side lower, so a
detection becomes the face box ``DETECTOR_SIDE`` x its side, moved down by ``DETECTOR_SHIFT`` x its
side. The crop is then the face box padded 1.25, exactly as at
evaluation, predicted with the flip test, decoded and mapped back to the photo.

Writes OUT.png (the photo with the landmarks drawn) and OUT.json (landmarks per face, in pixels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hrnet_lib.data.loader import read_checked_image
from hrnet_lib.device import resolve_device
from hrnet_lib.evaluate.decode import DECODERS
from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.evaluate.report import load_model
from hrnet_lib.io import NoSpaceError, atomic_bytes, prepare_output, save_json
from hrnet_lib.model.weights import TRUST_FLAG, TRUST_HELP

CASCADE = "haarcascade_frontalface_default.xml"
DETECTOR_SIDE = 0.9  # face-box side / Haar box side (measured 0.87-0.90, see the module doc)
DETECTOR_SHIFT = 0.1  # face-box centre below the Haar box centre, in Haar box sides (measured 0.07-0.17)
PADDING = 1.25


class PredictError(RuntimeError):
    """A photo that cannot be read or has no face to predict; the message says what to do."""


def detect_faces(image: np.ndarray) -> np.ndarray:
    """Face boxes (N, 4) x0 y0 x1 y1 from OpenCV's Haar cascade on a BGR image, largest first."""
    classifier = getattr(cv2, "CascadeClassifier", None)
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = Path(folder) / CASCADE
    if classifier is None or not path.is_file():
        raise PredictError(
            f"OpenCV {cv2.__version__} has no bundled Haar face detector ({CASCADE}; OpenCV 5 moved it "
            "out of the main package): pass the face box with --box x0 y0 x1 y1, "
            "or install opencv-python-headless<5"
        )
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    found = classifier(str(path)).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in found], dtype=np.float64).reshape(-1, 4)
    return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")]


def face_box_from_detection(box: np.ndarray) -> np.ndarray:
    """Turn a Haar detection (x0 y0 x1 y1) into a landmark-like face box (see the module doc)."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + DETECTOR_SHIFT * side
    half = DETECTOR_SIDE * side / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def crop_of_box(box: np.ndarray, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre (2,) and scale (2,) of a face box: the square around it, padded as at evaluation."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    if not (x1 > x0 and y1 > y0):
        raise PredictError(f"face box must have x1 > x0 and y1 > y0, got {x0:g} {y0:g} {x1:g} {y1:g}")
    side = max(x1 - x0, y1 - y0) * padding
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.array([side, side])


def predict_landmarks(
    model: torch.nn.Module,
    image: np.ndarray,
    boxes: np.ndarray,
    input_size: int = 256,
    heatmap_size: int = 64,
    flip: bool = True,
    decoder: str = "standard",
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (N, K, 2) in image pixels and scores (N, K) for face boxes (N, 4) on a BGR image."""
    from hrnet_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, warp_matrix

    crops, centers, scales = [], [], []
    for box in boxes:
        center, scale = crop_of_box(box)
        centers.append(center)
        scales.append(scale)
        matrix = warp_matrix(center, scale, 0.0, (input_size, input_size))
        crop = cv2.warpAffine(
            image, matrix, (input_size, input_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        rgb = crop[..., ::-1].astype(np.float32)
        crops.append(((rgb - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).transpose(2, 0, 1))
    device = torch.device(device)
    batch = torch.from_numpy(np.stack(crops))
    return crops_to_landmarks(
        model.to(device),
        device,
        batch,
        np.stack(centers),
        np.stack(scales),
        input_size,
        heatmap_size,
        flip,
        decoder,
        bf16=False,  # fp32 everywhere, as predict always ran
    )


def draw(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of the BGR image with each face box (thin) and its landmarks (filled dots)."""
    canvas = image.copy()
    for box, points in zip(boxes, landmarks, strict=True):
        side = max(box[2] - box[0], box[3] - box[1])
        radius = max(1, round(side / 80))
        x0, y0, x1, y1 = np.round(box).astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 200, 0), max(1, radius // 2), cv2.LINE_AA)
        for x, y in points:
            cv2.circle(canvas, (round(x), round(y)), radius, (0, 255, 0), -1, cv2.LINE_AA)
    return canvas


def check_box(box: np.ndarray, width: int, height: int, image_path: str | Path) -> None:
    """`PredictError` for a --box that is not finite, empty, or wholly outside the image (a box in other
    units or for another photo); a box partly outside is fine (the crop pads with black, as in training)."""
    x0, y0, x1, y1 = box
    shown = " ".join(f"{v:g}" for v in box)
    if not np.isfinite(box).all():
        raise PredictError(f"--box {shown}: coordinates must be finite numbers")
    if not (x1 > x0 and y1 > y0):
        raise PredictError(f"--box {shown}: face box must have x1 > x0 and y1 > y0")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise PredictError(
            f"--box {shown} lies wholly outside {image_path} ({width} x {height} pixels); "
            "the box is x0 y0 x1 y1 in that image's pixels"
        )


def predict_photo(
    image_path: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    box: list[float] | None = None,
    flip: bool = True,
    decoder: str = "standard",
    device: str = "auto",
    trust: bool = False,
) -> dict[str, Any]:
    """Predict the landmarks of every face of a photo; write OUT.png and OUT.json; return the JSON data.
    `trust` lets the checkpoint hold more than tensors and plain data (`read_checkpoint`)."""
    image_path, out = Path(image_path), Path(out)
    if out.suffix.lower() != ".png":
        raise PredictError(f"--out {out}: name the PNG to write (OUT.png); the JSON goes beside it")
    prepare_output(out)
    try:  # the dataset reader's checks: a truncated JPEG is refused, not half grey
        image = read_checked_image(image_path)
    except (ValueError, FileNotFoundError) as error:
        raise PredictError(f"{image_path}: cannot read image ({error})") from None
    if box is not None:
        boxes = np.asarray(box, dtype=np.float64).reshape(1, 4)
        check_box(boxes[0], image.shape[1], image.shape[0], image_path)
        detections = None
    else:
        detections = detect_faces(image)
        if len(detections) == 0:
            raise PredictError(
                f"{image_path}: no face found by the detector; pass the face box with --box x0 y0 x1 y1"
            )
        boxes = np.stack([face_box_from_detection(d) for d in detections])
    model, config = load_model(checkpoint, trust)
    landmarks, scores = predict_landmarks(
        model,
        image,
        boxes,
        config["input_size"],
        config["heatmap_size"],
        flip,
        decoder,
        resolve_device(device),
    )
    ok, png = cv2.imencode(".png", draw(image, boxes, landmarks))
    if not ok:
        raise PredictError(f"{out}: cannot encode the PNG")
    result = {
        "image": str(image_path),
        "checkpoint": str(checkpoint),
        "flip_test": flip,
        "decoder": decoder,
        "box_source": "--box" if detections is None else f"OpenCV Haar cascade {CASCADE}",
        "faces": [
            {
                "box": boxes[i].tolist(),
                "detection": None if detections is None else detections[i].tolist(),
                "landmarks": landmarks[i].tolist(),
                "scores": scores[i].tolist(),
            }
            for i in range(len(boxes))
        ],
    }
    save_json(
        result, out.with_suffix(".json"), indent=1
    )  # first: it refuses NaN, and then nothing is written
    atomic_bytes(out, png.tobytes())
    return result


def main(argv: list[str]) -> int:
    """Entry point of `python -m hrnet_lib predict`; returns the exit status (0 ok, 1 a clear error)."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnet_lib predict", description="Find the 98 landmarks on any photo."
    )
    parser.add_argument("image", type=Path, help="any photo OpenCV can read")
    parser.add_argument("--checkpoint", required=True, type=Path, help="project checkpoint or mmpose .pth")
    parser.add_argument(
        "--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="face box, pixels"
    )
    parser.add_argument("--out", required=True, type=Path, help="output PNG; the JSON goes beside it")
    parser.add_argument("--no-flip", action="store_true", help="no flip test")
    parser.add_argument("--decoder", choices=DECODERS, default="standard")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(TRUST_FLAG, action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    try:
        result = predict_photo(
            args.image,
            args.checkpoint,
            args.out,
            args.box,
            not args.no_flip,
            args.decoder,
            args.device,
            args.trust_checkpoint,
        )
    except (PredictError, FileNotFoundError, ValueError, NoSpaceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(result['faces'])} face(s): wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0
