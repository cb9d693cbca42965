"""Face boxes: OpenCV's bundled face detector, a detection's face box, and the box-to-crop rule.

A face box is a tight box, brows to chin and ear to ear, like the box around WFLW's landmarks. Its crop
is the square around it (side = its longer side, same centre) padded 1.25, exactly as evaluation crops a
face from its landmarks, so a box that matches the landmark box gives the crop the model was trained on.

A Haar detection is not a landmark box: it reaches higher (forehead) and not as low (chin). On the three
real faces of the wflw-mini fixture that the cascade finds (OpenCV 4.14, default parameters below), the
landmark box's side is 0.87-0.90 of the Haar box's and its centre lies 0.07-0.17 of a side lower, so a
detection becomes the face box ``DETECTOR_SIDE`` x its side, moved down by ``DETECTOR_SHIFT`` x its side.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from hrnet_lib.data.transforms import warp_matrix

CASCADE = "haarcascade_frontalface_default.xml"
DETECTOR_SIDE = 0.9  # face-box side / Haar box side (measured 0.87-0.90, see the module doc)
DETECTOR_SHIFT = 0.1  # face-box centre below the Haar box centre, in Haar box sides (measured 0.07-0.17)
PADDING = 1.25


class PredictError(ValueError):
    """A photo, box or video that cannot be used; the message names it and says what to do."""


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    """OpenCV's bundled frontal-face cascade, read once (a video asks for it on every lost face)."""
    classifier = getattr(cv2, "CascadeClassifier", None)
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = Path(folder) / CASCADE
    if classifier is None or not path.is_file():
        raise PredictError(
            f"OpenCV {cv2.__version__} has no bundled Haar face detector ({CASCADE}; OpenCV 5 moved it "
            "out of the main package): pass the face box with --box x0 y0 x1 y1, "
            "or install opencv-python-headless<5"
        )
    return classifier(str(path))


def haar_detections(image: np.ndarray) -> np.ndarray:
    """Raw Haar detections (N, 4) x0 y0 x1 y1 on an RGB uint8 image, largest first."""
    gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))
    found = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in found], dtype=np.float64).reshape(-1, 4)
    return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")]


def face_box_from_detection(box: np.ndarray) -> np.ndarray:
    """Turn a Haar detection (x0 y0 x1 y1) into a landmark-like face box (see the module doc)."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + DETECTOR_SHIFT * side
    half = DETECTOR_SIDE * side / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def haar_face_boxes(image: np.ndarray) -> np.ndarray:
    """The default detector of `Landmarker`: face boxes (N, 4) of an RGB image, largest first."""
    return np.array([face_box_from_detection(d) for d in haar_detections(image)]).reshape(-1, 4)


def crop_of_box(box: np.ndarray, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre (2,) and scale (2,) of a face box: the square around it, padded as at evaluation."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    if not (x1 > x0 and y1 > y0):
        raise PredictError(f"face box must have x1 > x0 and y1 > y0, got {x0:g} {y0:g} {x1:g} {y1:g}")
    side = max(x1 - x0, y1 - y0) * padding
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.array([side, side])


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """The box x0 y0 x1 y1 around landmarks (K, 2): a face box whose crop is evaluation's crop."""
    points = np.asarray(landmarks, dtype=np.float64)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes x0 y0 x1 y1 (0 when they do not overlap)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def check_box(box: np.ndarray, width: int, height: int, image_name: str | Path) -> None:
    """`PredictError` for a face box that is not finite, empty, or wholly outside the image (a box in other
    units or for another photo); a box partly outside is fine (the crop pads with black, as in training)."""
    box = np.asarray(box, dtype=np.float64)
    shown = " ".join(f"{v:g}" for v in box)
    if box.shape != (4,):
        raise PredictError(f"face box {shown}: needs 4 numbers x0 y0 x1 y1, got shape {box.shape}")
    x0, y0, x1, y1 = box
    if not np.isfinite(box).all():
        raise PredictError(f"face box {shown}: coordinates must be finite numbers")
    if not (x1 > x0 and y1 > y0):
        raise PredictError(f"face box {shown}: face box must have x1 > x0 and y1 > y0")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise PredictError(
            f"face box {shown} lies wholly outside {image_name} ({width} x {height} pixels); "
            "the box is x0 y0 x1 y1 in that image's pixels"
        )


def crop_faces(
    image: np.ndarray, boxes: np.ndarray, input_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network inputs of face boxes (N, 4) on an image (H, W, 3) uint8: crops (N, 3, S, S) uint8 in the
    image's channel order, and each crop's centre and scale (N, 2), through `crop_of_box`."""
    size = (input_size, input_size)
    crops, centers, scales = [], [], []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        center, scale = crop_of_box(box)
        matrix = warp_matrix(center, scale, 0.0, size)
        crop = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        crops.append(crop.transpose(2, 0, 1))
        centers.append(center)
        scales.append(scale)
    if not crops:
        return np.zeros((0, 3, *size), np.uint8), np.zeros((0, 2)), np.zeros((0, 2))
    return np.stack(crops), np.stack(centers), np.stack(scales)
