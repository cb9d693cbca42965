"""Faces followed through video frames, as face trackers do it, and the One-Euro filter that smooths them.

Tracking: the crop of a face in the next frame is the crop of its landmarks in this one (their box,
through the same box-to-crop rule as a detection; so a tracked face gets evaluation's crop); the detector
runs only on the first frame and on frames where a face was lost. A face is lost when its mean landmark
score falls below `min_score`, or the centre of its landmarks' box leaves the frame.

Smoothing: the One-Euro filter (G. Casiez, N. Roussel, D. Vogel, "1 Euro Filter: A Simple Speed-based
Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012), written from the paper's definition:
an exponential low-pass filter whose cutoff rises with the signal's speed, so slow motion (where jitter
shows) is smoothed hard and fast motion follows with little lag. Applied to each coordinate on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrnet_lib.evaluate.boxes import box_iou, landmark_box

MIN_SCORE = 0.2  # mean heatmap peak below which a tracked face counts as lost
STILL_PX = 0.1  # mean landmark motion a frame below which `tracking_metrics` counts the face as still
NEW_FACE_IOU = 0.3  # a detection overlapping a tracked face this much is that face, not a new one


def smoothing_factor(period: float, cutoff: float) -> float:
    """The paper's alpha = 1 / (1 + tau / T_e), tau = 1 / (2 pi f_c): the weight of the new sample."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)


class OneEuroFilter:
    """One-Euro filter of an array signal sampled at times t (seconds).

    `min_cutoff` (Hz) is the cutoff at rest: lower smooths more. `beta` (per signal unit, e.g. 1/pixel)
    raises the cutoff with the filtered speed |dx|: higher follows fast motion with less lag.
    `d_cutoff` (Hz) is the cutoff of the speed's own low-pass filter.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"One-Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, "
                f"{d_cutoff}, {beta}"
            )
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None
        self.time = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """The filtered value at time `t` of the sample `x` (the first sample passes through)."""
        x = np.asarray(x, dtype=np.float64)
        if self.value is None or self.speed is None:
            self.value, self.speed, self.time = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        period = float(t) - self.time
        if period <= 0:
            raise ValueError(f"One-Euro samples must come in time order: {t} after {self.time}")
        speed = (x - self.value) / period
        a_d = smoothing_factor(period, self.d_cutoff)
        self.speed = a_d * speed + (1 - a_d) * self.speed
        cutoff = self.min_cutoff + self.beta * np.abs(self.speed)
        tau = 1.0 / (2.0 * math.pi * cutoff)
        alpha = 1.0 / (1.0 + tau / period)
        self.value = alpha * x + (1 - alpha) * self.value
        self.time = float(t)
        return self.value.copy()


@dataclass
class Track:
    """One followed face: its id, its last predicted landmarks (the next crop's source) and its filter."""

    id: int
    landmarks: np.ndarray
    smoother: OneEuroFilter | None


def is_lost(landmarks: np.ndarray, scores: np.ndarray, width: int, height: int, min_score: float) -> bool:
    """A face is lost when its mean score is below `min_score` or its landmarks' centre left the frame."""
    box = landmark_box(landmarks)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = 0 <= cx < width and 0 <= cy < height
    return bool(float(np.mean(scores)) < min_score or not inside or not np.isfinite(box).all())


class FaceTracker:
    """Follows up to `max_faces` faces through frames (`step` per frame, RGB, in order).

    `landmarks_of_boxes(images, boxes)` is `Landmarker.landmarks_of_boxes`, `detector(image)` gives face
    boxes (N, 4). `first_boxes` (N, 4), when given, replace the detector on the first frame. `smoothing`
    holds the One-Euro parameters (min_cutoff, beta, d_cutoff), or is None for the raw landmarks.
    """

    def __init__(
        self,
        landmarks_of_boxes: Callable[[list[np.ndarray], list[np.ndarray]], tuple[list, list]],
        detector: Callable[[np.ndarray], np.ndarray],
        max_faces: int = 1,
        min_score: float = MIN_SCORE,
        smoothing: dict[str, float] | None = None,
        first_boxes: np.ndarray | None = None,
    ) -> None:
        self.landmarks_of_boxes, self.detector = landmarks_of_boxes, detector
        self.max_faces, self.min_score, self.smoothing = int(max_faces), float(min_score), smoothing
        self.first_boxes = first_boxes
        self.tracks: list[Track] = []
        self.next_id = 0
        self.detector_runs = 0

    def _predict(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(boxes) == 0:
            return np.zeros((0, 0, 2)), np.zeros((0, 0))
        landmarks, scores = self.landmarks_of_boxes([frame], [np.asarray(boxes, dtype=np.float64)])
        return landmarks[0], scores[0]

    def _new_faces(self, frame: np.ndarray, kept: list[np.ndarray]) -> np.ndarray:
        """Boxes of faces to start tracking: the first boxes, or detections that are no tracked face."""
        if self.first_boxes is not None:
            boxes, self.first_boxes = np.asarray(self.first_boxes, dtype=np.float64).reshape(-1, 4), None
        else:
            self.detector_runs += 1
            boxes = np.asarray(self.detector(frame), dtype=np.float64).reshape(-1, 4)
        fresh = [b for b in boxes if all(box_iou(b, k) < NEW_FACE_IOU for k in kept)]
        return np.array(fresh[: self.max_faces - len(kept)]).reshape(-1, 4)

    def _start_tracks(self, frame: np.ndarray, kept: list[np.ndarray]) -> list[tuple]:
        """New tracks (track, box, landmarks, scores) for the faces found in this frame and not tracked."""
        height, width = frame.shape[:2]
        boxes = self._new_faces(frame, kept)
        landmarks, scores = self._predict(frame, boxes)
        started = []
        for box, points, score in zip(boxes, landmarks, scores, strict=True):
            if not is_lost(points, score, width, height, self.min_score):
                smoother = OneEuroFilter(**self.smoothing) if self.smoothing is not None else None
                started.append((Track(self.next_id, points, smoother), box, points, score))
                self.next_id += 1
        return started

    def step(self, frame: np.ndarray, t: float) -> dict[str, Any]:
        """Track the faces into this frame (RGB) at time `t` (seconds); the frame's record: whether the
        detector ran, and per face its track id, crop box, landmarks (smoothed when smoothing) and scores."""
        height, width = frame.shape[:2]
        boxes = np.array([landmark_box(track.landmarks) for track in self.tracks]).reshape(-1, 4)
        landmarks, scores = self._predict(frame, boxes)
        faces = [
            (track, box, points, score)
            for track, box, points, score in zip(self.tracks, boxes, landmarks, scores, strict=True)
            if not is_lost(points, score, width, height, self.min_score)
        ]
        runs = self.detector_runs
        if (not self.tracks or len(faces) < len(self.tracks)) and len(faces) < self.max_faces:
            faces += self._start_tracks(frame, [box for _, box, _, _ in faces])
        self.tracks = []
        shown = []
        for track, box, points, score in faces:
            track.landmarks = points
            self.tracks.append(track)
            smoothed = track.smoother(points, t) if track.smoother is not None else points
            shown.append({"track": track.id, "box": box, "landmarks": smoothed, "scores": score})
        return {"time": float(t), "detector": self.detector_runs > runs, "faces": shown}


def tracking_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Tracking error and jitter of landmarks (T, K, 2) against the truth (T, K, 2), in pixels and over
    the truth's inter-ocular distance (points 60 and 72 of a 98-point face; NME as on WFLW).

    error: mean distance to the truth. jitter: mean distance between a point's frame-to-frame motion and
    the truth's motion, |(p_t - p_t-1) - (g_t - g_t-1)|: what shakes on screen that the face did not do;
    jitter_still: the same over the frames where the truth moves less than `STILL_PX` (a still face).
    """
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    if predicted.shape != truth.shape or len(truth) < 2:
        raise ValueError(
            f"need two or more frames of matching shape, got {predicted.shape} and {truth.shape}"
        )
    inter_ocular = np.linalg.norm(truth[:, 60] - truth[:, 72], axis=-1)
    error = np.linalg.norm(predicted - truth, axis=-1)
    motion_error = np.linalg.norm(np.diff(predicted, axis=0) - np.diff(truth, axis=0), axis=-1)
    still = np.linalg.norm(np.diff(truth, axis=0), axis=-1).mean(axis=1) < STILL_PX
    return {
        "frames": int(len(truth)),
        "error_px": float(error.mean()),
        "nme": float((error.mean(axis=1) / inter_ocular).mean()),
        "jitter_px": float(motion_error.mean()),
        "jitter_nme": float((motion_error.mean(axis=1) / inter_ocular[1:]).mean()),
        "truth_motion_px": float(np.linalg.norm(np.diff(truth, axis=0), axis=-1).mean()),
        "still_frames": int(still.sum()),
        "jitter_still_px": float(motion_error[still].mean()) if still.any() else None,
    }
