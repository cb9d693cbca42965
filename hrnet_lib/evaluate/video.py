"""Landmarks through a video: every frame tracked (see `tracking`), drawn, and recorded.

Writes OUT.mp4 (the frames with boxes and landmarks drawn, mp4v), OUT.jsonl (one record a frame: frame
index, time, whether the detector ran, and per face its track id, crop box, landmarks and scores) and
OUT.json (the summary). With the truth of a synthetic video (`synth-video`), the summary also holds the
tracking error and the jitter of the first tracked face against it (`tracking_metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hrnet_lib.data.video import VideoReader, write_video
from hrnet_lib.evaluate.boxes import check_box
from hrnet_lib.evaluate.landmarker import Landmarker, draw_faces
from hrnet_lib.evaluate.tracking import FaceTracker, tracking_metrics
from hrnet_lib.io import atomic_bytes, jsonl_text, read_jsonl, save_json


def frame_record(index: int, record: dict[str, Any]) -> dict[str, Any]:
    """A tracker's record of a frame as JSON: arrays become lists."""
    faces = [
        {
            "track": face["track"],
            "box": np.asarray(face["box"]).tolist(),
            "landmarks": np.asarray(face["landmarks"]).tolist(),
            "scores": np.asarray(face["scores"]).tolist(),
        }
        for face in record["faces"]
    ]
    return {"frame": index, "time": record["time"], "detector": record["detector"], "faces": faces}


def compare_to_truth(records: list[dict[str, Any]], truth_file: str | Path) -> dict[str, Any]:
    """Tracking error and jitter of the first tracked face over the frames where both it and the truth
    have a face; frames where the truth has a face and the tracker none are counted as missed."""
    truth = {r["frame"]: r["landmarks"] for r in read_jsonl(truth_file)}
    predicted, expected, missed = [], [], 0
    for record in records:
        landmarks = truth.get(record["frame"])
        if landmarks is None:
            continue
        if not record["faces"]:
            missed += 1
            continue
        predicted.append(record["faces"][0]["landmarks"])
        expected.append(landmarks)
    if len(expected) < 2:
        raise ValueError(
            f"{truth_file}: fewer than two frames where both the truth and the tracker have a face"
        )
    return tracking_metrics(np.array(predicted), np.array(expected)) | {"missed_frames": missed}


def predict_video(
    video: str | Path,
    landmarker: Landmarker,
    out: str | Path,
    tracker: dict[str, Any] | None = None,
    truth: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Track and draw the faces of a video into OUT.mp4, OUT.jsonl and OUT.json; returns the summary.

    `tracker` holds `FaceTracker` options (max_faces, min_score, smoothing, first_boxes)."""
    out = Path(out)
    reader = VideoReader(video)
    for box in np.asarray((tracker or {}).get("first_boxes", np.zeros((0, 4)))).reshape(-1, 4):
        check_box(box, reader.width, reader.height, video)
    follow = FaceTracker(landmarker.landmarks_of_boxes, landmarker.detector, **(tracker or {}))
    records: list[dict[str, Any]] = []

    def annotated() -> Any:
        frames = tqdm(reader, total=reader.frames or None, desc="frames", unit="frame", disable=not progress)
        for index, frame in enumerate(frames):
            record = follow.step(np.ascontiguousarray(frame[..., ::-1]), index / reader.fps)
            records.append(frame_record(index, record))
            faces = record["faces"]
            boxes = np.array([face["box"] for face in faces]).reshape(-1, 4)
            yield draw_faces(frame, boxes, [face["landmarks"] for face in faces])

    count = write_video(out, annotated(), reader.fps)
    if count == 0:
        raise ValueError(f"{video}: no frame could be read")
    atomic_bytes(out.with_suffix(".jsonl"), jsonl_text(records).encode())
    options = {k: v for k, v in (tracker or {}).items() if k != "first_boxes"}
    summary: dict[str, Any] = {
        "video": str(video),
        "frames": count,
        "fps": reader.fps,
        "frames_with_a_face": sum(bool(r["faces"]) for r in records),
        "detector_runs": follow.detector_runs,
        "tracks": follow.next_id,
        "tracker": options,
        "flip_test": landmarker.flip_test,
        "decoder": landmarker.decoder,
        "backend": landmarker.backend,
    }
    if truth is not None:
        summary["truth"] = str(truth)
        summary["metrics"] = compare_to_truth(records, truth)
    save_json(summary, out.with_suffix(".json"))
    return summary
