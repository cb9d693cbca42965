"""The crop protocols of `evaluate --crops`: where each test face's crop comes from.

A published NME holds the protocol that cropped the faces as much as the model. Each protocol gives a
face box, and one rule turns any box into the crop: the square of its longer side about its centre,
padded 1.25 (`boxes.crop_of_box`, the rule of ``predict --box``).

- ``landmarks`` (the default; mmpose's protocol): the box around the face's ground-truth landmarks. With
  ``--annotations``, mmpose's official centre and scale of each face instead (the published crops).
- ``rect``: the detection rectangle of the face's annotation line (WFLW's ``x_min y_min x_max y_max``; the
  synthesiser draws one the same way, 0.9-1.1 times the landmark box's side with its centre moved by a few
  percent of it).
- ``detector``: OpenCV's Haar cascade on the photo, as ``predict`` runs it; a detection is matched to the
  face whose landmark box it overlaps most (intersection over union at least ``MATCH_IOU``, each detection
  to one face, best overlaps first) and becomes a face box as in ``predict`` (`face_box_from_detection`).
  A face no detection matches falls back to its ``rect`` crop, and the results count those faces.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hrnet_lib.data.loader import crop_box, read_image
from hrnet_lib.data.transforms import transform_points, warp_matrix
from hrnet_lib.data.wflw import Face
from hrnet_lib.evaluate.boxes import (
    box_iou,
    crop_of_box,
    face_box_from_detection,
    haar_detections,
    landmark_box,
)

PROTOCOLS = {
    "landmarks": "the box of the ground-truth landmarks, its square padded 1.25 (mmpose's protocol); with "
    "--annotations, mmpose's official centre and scale",
    "rect": "the annotation line's detection rectangle, its square padded 1.25 (the rule of predict --box)",
    "detector": "OpenCV's Haar detection that matches the face, made a face box as predict does, its square "
    "padded 1.25; a face without a matching detection falls back to its rect crop",
}
MATCH_IOU = 0.3


def parse_protocols(text: str) -> list[str]:
    """`--crops` as a list: "all", or protocol names separated by commas (the first one fills the table)."""
    names = list(PROTOCOLS) if text == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROTOCOLS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"--crops {text!r}: use all, or names from {', '.join(PROTOCOLS)} separated by commas"
        )
    return names


def with_box_crop(face: Face, box: np.ndarray) -> Face:
    """The face with the crop of `box` (centre and unpadded side, as mmpose's json gives them)."""
    try:
        center, side = crop_of_box(box, padding=1.0)
    except ValueError as error:
        raise ValueError(f"{face.source}: {error}") from None
    return dataclasses.replace(face, center=center, scale=side)


def match_detections(faces: list[Face], detections: np.ndarray) -> list[np.ndarray | None]:
    """Each face's matched Haar detection (or None): greedy by overlap with the landmark boxes."""
    pairs = [
        (box_iou(face_box_from_detection(d), landmark_box(face.landmarks)), i, j)
        for i, face in enumerate(faces)
        for j, d in enumerate(detections)
    ]
    matched: list[np.ndarray | None] = [None] * len(faces)
    used: set[int] = set()
    for overlap, i, j in sorted(pairs, key=lambda pair: -pair[0]):
        if overlap >= MATCH_IOU and matched[i] is None and j not in used:
            matched[i] = detections[j]
            used.add(j)
    return matched


def detector_faces(faces: list[Face], image_root: Path, progress: bool) -> tuple[list[Face], dict[str, Any]]:
    """The faces with the crops of their Haar detections (or of their rectangles when none matches)."""
    by_image: dict[str, list[int]] = {}
    for index, face in enumerate(faces):
        by_image.setdefault(face.image, []).append(index)
    cropped: list[Face] = list(faces)
    missed = []
    for image, indices in tqdm(by_image.items(), desc="detecting faces", unit="image", disable=not progress):
        photo = read_image(image_root / image, faces[indices[0]].source)[..., ::-1]
        matches = match_detections([faces[i] for i in indices], haar_detections(np.ascontiguousarray(photo)))
        for index, detection in zip(indices, matches, strict=True):
            if detection is None:
                missed.append(index)
                cropped[index] = with_box_crop(faces[index], faces[index].box)
            else:
                cropped[index] = with_box_crop(faces[index], face_box_from_detection(detection))
    info = {"detected": len(faces) - len(missed), "missed": len(missed), "missed_faces": missed}
    return cropped, info | {"fallback": "rect"}


def protocol_faces(
    faces: list[Face], protocol: str, image_root: str | Path, progress: bool = True
) -> tuple[list[Face], dict[str, Any]]:
    """The test faces as `protocol` crops them (see the module doc), and what it records (detector: how
    many faces were detected and which fell back to their rectangle)."""
    if protocol == "landmarks":
        return list(faces), {}
    if protocol == "rect":
        return [with_box_crop(face, face.box) for face in faces], {}
    if protocol == "detector":
        return detector_faces(faces, Path(image_root), progress)
    raise ValueError(f"unknown crop protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def crop_squares(faces: list[Face]) -> np.ndarray:
    """Each face's padded crop square (N, 3): centre x, centre y and side, in photo pixels."""
    squares = [crop_box(face) for face in faces]
    return np.array([[*center, scale[0]] for center, scale in squares]).reshape(-1, 3)


def crop_views(
    photo: np.ndarray, landmarks: np.ndarray, squares: dict[str, np.ndarray], size: int = 256
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What the network sees of one face under each protocol: the crops (size x size, the photo's channel
    order) of its crop squares (centre x, centre y, side), and the face's true landmarks in each crop."""
    views, points = [], []
    for cx, cy, side in squares.values():
        matrix = warp_matrix((cx, cy), (side, side), 0.0, (size, size))
        views.append(cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR))
        points.append(transform_points(landmarks, matrix))
    return views, points
