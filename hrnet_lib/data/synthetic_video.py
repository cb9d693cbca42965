"""A synthetic video with known landmarks: one face of the synthesiser moving and turning over the frames.

`python -m hrnet_lib synth-video --out demo.mp4 [--frames 150] [--seed 0]` writes the video (mp4v) and
``demo.truth.jsonl`` beside it: one record a frame, ``{"frame": i, "landmarks": [[x, y], ...]}`` (null
while the face is away). Over the clip the face moves to one side and holds still, crosses to the other
side and holds still, and comes back; as it goes it turns its head (yaw, drawn in 3-D as the synthesiser
draws it), tilts (roll), nods a little and comes closer or goes back. With ``--away A B`` frames A to
B-1 show the background only.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from hrnet_lib.data.synthetic import draw_background, face_extent, render_face, sample_face
from hrnet_lib.data.video import write_video
from hrnet_lib.data.wflw import ATTRIBUTES
from hrnet_lib.io import atomic_bytes, jsonl_text, prepare_output

SIZE = (640, 480)  # width, height
FPS = 30.0
YAW, ROLL, PITCH = 30.0, 10.0, 6.0  # degrees, amplitudes of the turn, tilt and nod
SWEEP, BOB, ZOOM = 0.12, 0.04, 0.1  # horizontal and vertical travel (share of the frame), size change
# The clip's timeline as (share of the frames, phase at its end): the face moves between two poses, holds
# each for a while (where jitter shows), and comes back, easing in and out of every move.
TIMELINE = (
    (0.15, 0.5 * math.pi),
    (0.2, 0.5 * math.pi),
    (0.3, 1.5 * math.pi),
    (0.2, 1.5 * math.pi),
    (0.15, 2 * math.pi),
)


def truth_path(video: str | Path) -> Path:
    """Where the landmarks of a synthetic video go: NAME.truth.jsonl beside NAME.mp4."""
    video = Path(video)
    return video.with_name(video.stem + ".truth.jsonl")


def phase_at(progress: float) -> float:
    """The pose phase (radians) at a share `progress` (0 to 1) of the clip, along `TIMELINE`."""
    start, begin = 0.0, 0.0
    for share, end in TIMELINE:
        if progress <= start + share:
            step = max(progress - start, 0.0) / share
            return begin + (end - begin) * (0.5 - 0.5 * math.cos(math.pi * step))
        start, begin = start + share, end
    return TIMELINE[-1][1]


def video_frames(
    seed: int = 0, frames: int = 150, size: tuple[int, int] = SIZE, away: tuple[int, int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(frame BGR uint8, landmarks (98, 2) in frame pixels or None while away) for each frame."""
    width, height = size
    background = draw_background(np.random.default_rng([seed, 11]), height, width)
    spec = sample_face(np.random.default_rng([seed, 12]), dict.fromkeys(ATTRIBUTES, False))
    lm_lo, lm_hi, head_lo, head_hi = face_extent(spec)
    scale = 0.45 * height / float((head_hi - head_lo).max())  # the head fills about half the height
    middle = -(lm_lo + lm_hi) / 2  # normalised origin relative to the landmark box centre
    for index in range(frames):
        canvas = background.copy()
        if away is not None and away[0] <= index < away[1]:
            yield canvas, None
            continue
        phase = phase_at(index / max(frames - 1, 1))
        grow = scale * (1 + ZOOM * math.sin(phase + 1.0))
        centre = np.array(
            [width * (0.5 + SWEEP * math.sin(phase)), height * (0.5 + BOB * math.sin(2 * phase))]
        )
        placed = replace(
            spec,
            yaw=YAW * math.sin(phase),
            roll=ROLL * math.sin(2 * phase + 0.5),
            pitch=PITCH * math.sin(3 * phase),
            scale=grow,
            center=tuple(float(v) for v in centre + grow * middle),
        )
        yield canvas, render_face(canvas, placed).landmarks


def write_synthetic_video(
    out: str | Path, seed: int = 0, frames: int = 150, away: tuple[int, int] | None = None, fps: float = FPS
) -> dict:
    """Write the video and its truth JSONL; returns what was written."""
    out = Path(out)
    records = []

    def frames_of_video() -> Iterator[np.ndarray]:
        for index, (frame, landmarks) in enumerate(video_frames(seed, frames, SIZE, away)):
            records.append({"frame": index, "landmarks": None if landmarks is None else landmarks.tolist()})
            yield frame

    count = write_video(out, frames_of_video(), fps)
    atomic_bytes(truth_path(out), jsonl_text(records).encode())
    return {"video": str(out), "truth": str(truth_path(out)), "frames": count, "fps": fps, "size": SIZE}


def main(argv: list[str] | None = None) -> int:
    """`python -m hrnet_lib synth-video --out OUT.mp4 [--frames N] [--seed S] [--away A B]`."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnet_lib synth-video", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="the .mp4 to write; the truth goes beside it")
    parser.add_argument(
        "--frames", type=int, default=150, help="frames (default: %(default)s, 5 s at 30 fps)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="which face and background (default: %(default)s)"
    )
    parser.add_argument(
        "--away", type=int, nargs=2, metavar=("A", "B"), help="frames A..B-1 without the face"
    )
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    try:
        if args.out.suffix.lower() != ".mp4":
            raise ValueError(f"--out {args.out}: name the .mp4 to write")
        prepare_output(args.out)
        written = write_synthetic_video(
            args.out, args.seed, args.frames, tuple(args.away) if args.away else None
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written['video']} ({written['frames']} frames) and {written['truth']}")
    return 0
