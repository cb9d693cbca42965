"""Video files through OpenCV: frames read in order, and an mp4 (codec mp4v) written atomically.

OpenCV's FFmpeg backend reads what it can; the frame rate and count are what the container declares
(a count of 0 or a rate of 0 means "not declared": the rate then falls back to ``DEFAULT_FPS``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

DEFAULT_FPS = 30.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_video(path: str | Path) -> bool:
    """Whether a path names a video by its suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """The BGR uint8 frames of a video file, in order; `fps`, `frames` (declared), `width`, `height`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such video file")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise ValueError(f"{self.path}: cannot open the video (not a format OpenCV's FFmpeg reads)")
        self.fps = float(capture.get(cv2.CAP_PROP_FPS)) or DEFAULT_FPS
        self.frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        capture.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write BGR uint8 frames (all of one size) as an mp4v video at `path`, atomically (a temporary file
    beside it, renamed when complete); returns the number of frames. No frame: nothing written, 0."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    raise ValueError(f"{path}: OpenCV cannot write an mp4v video here")
            writer.write(np.ascontiguousarray(frame))
            count += 1
        if writer is None:
            return 0
        writer.release()
        writer = None
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return count
