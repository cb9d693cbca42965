"""Tests for face tracking through video (hrnet_lib.evaluate.tracking): the One-Euro filter against the
paper's formulas by hand, and the tracker on a synthetic video of a face moving and turning, whose true
landmarks come from the synthesiser that drew each frame.

The model in the loop is an oracle: for each crop the tracker asks for, it returns Gaussian heatmaps at
the frame's true landmarks as they fall in that crop (DARK's unbiased encoding, decoded with DARK), and
empty heatmaps for landmarks outside the crop. Everything else is the real path: the crop the tracker
chooses, cropping, decoding and the map back to the frame. So a tracker that chose a wrong crop would
lose the landmarks that fall outside it, and the measured error and jitter are those of the tracking.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hrnet_lib.data.synthetic_video import video_frames
from hrnet_lib.data.targets import encode_heatmaps
from hrnet_lib.data.transforms import transform_points, warp_matrix
from hrnet_lib.evaluate.boxes import crop_of_box, landmark_box
from hrnet_lib.evaluate.landmarker import Landmarker
from hrnet_lib.evaluate.predict import SMOOTHING
from hrnet_lib.evaluate.tracking import FaceTracker, OneEuroFilter, smoothing_factor, tracking_metrics

SIZE, HEATMAP = 128, 32


def test_smoothing_factor_is_the_papers_alpha() -> None:
    # alpha = 1 / (1 + tau / T_e), tau = 1 / (2 pi f_c): at T_e = 0.1 s and f_c = 1 Hz, tau / T_e = 1.5915
    assert smoothing_factor(0.1, 1.0) == pytest.approx(1 / (1 + 1 / (2 * math.pi * 0.1)))
    assert smoothing_factor(0.1, 1.0) == pytest.approx(0.38586, abs=1e-5)


def test_one_euro_by_hand() -> None:
    alpha = 0.385869  # smoothing_factor(0.1, 1.0)
    plain = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    assert plain(np.array([0.0]), 0.0)[0] == 0.0  # the first sample passes through
    assert plain(np.array([1.0]), 0.1)[0] == pytest.approx(alpha, abs=1e-6)
    assert plain(np.array([1.0]), 0.2)[0] == pytest.approx(alpha + (1 - alpha) * alpha, abs=1e-6)
    # beta = 0.5: the speed (1 - 0) / 0.1 = 10, filtered at 1 Hz to 3.8587, raises the cutoff to
    # 1 + 0.5 * 3.8587 = 2.9293 Hz, so alpha = 1 / (1 + 1 / (2 pi 2.9293 0.1)) = 0.64796
    fast = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    fast(np.array([0.0]), 0.0)
    cutoff = 1.0 + 0.5 * alpha * 10.0
    assert fast(np.array([1.0]), 0.1)[0] == pytest.approx(
        1 / (1 + 1 / (2 * math.pi * cutoff * 0.1)), abs=1e-6
    )
    assert fast.value[0] == pytest.approx(0.64796, abs=1e-5)


def test_one_euro_holds_a_constant_and_lags_less_with_beta() -> None:
    still = OneEuroFilter(min_cutoff=0.5, beta=1.0)
    for i in range(5):
        np.testing.assert_array_equal(still(np.array([[3.0, -2.0]]), i / 30), [[3.0, -2.0]])
    lags = []
    for beta in (0.0, 0.1):
        ramp = OneEuroFilter(min_cutoff=1.0, beta=beta)
        for i in range(30):
            out = ramp(np.array([10.0 * i]), i / 30)
        lags.append(10.0 * 29 - out[0])
    assert lags[0] > 3 * lags[1] > 0  # speed opens the filter: the ramp is followed closely
    with pytest.raises(ValueError, match="time order"):
        ramp(np.array([0.0]), 0.0)


class TruthHeatmaps(nn.Module):
    """The oracle: `keypoints` (set before each forward, one (98, 2) array of heatmap pixels per crop, or
    None for a crop without the face) become unbiased Gaussian heatmaps (sigma 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.keypoints: list[np.ndarray | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x) == len(self.keypoints)
        maps = np.zeros((len(x), 98, HEATMAP, HEATMAP), np.float32)
        for i, points in enumerate(self.keypoints):
            if points is not None:
                maps[i] = encode_heatmaps(points, (HEATMAP, HEATMAP), 2.0, unbiased=True)[0]
        return torch.from_numpy(maps)


class OracleVideo:
    """The frames of a synthetic video with the oracle landmarker that knows the current frame's truth
    (plus optional noise in frame pixels); counts detector calls."""

    def __init__(self, frames: int = 60, away: tuple[int, int] | None = None, noise: float = 0.0) -> None:
        self.video = [
            (np.ascontiguousarray(f[..., ::-1]), lm) for f, lm in video_frames(0, frames, away=away)
        ]
        self.oracle = TruthHeatmaps()
        self.landmarker = Landmarker(
            self.oracle, input_size=SIZE, heatmap_size=HEATMAP, flip_test=False, decoder="dark"
        )
        self.noise = (
            np.random.default_rng(0).normal(0, noise, (frames, 98, 2)) if noise else np.zeros((frames, 98, 2))
        )
        self.now = 0
        self.asked: list[np.ndarray] = []
        self.detections = 0

    def landmarks_of_boxes(self, images: list, boxes: list) -> tuple[list, list]:
        truth = self.video[self.now][1]
        self.asked += list(boxes[0])
        self.oracle.keypoints = []
        for box in boxes[0]:
            matrix = warp_matrix(*crop_of_box(box), 0.0, (SIZE, SIZE))
            shown = None if truth is None else truth + self.noise[self.now]
            self.oracle.keypoints.append(
                None if shown is None else transform_points(shown, matrix) * HEATMAP / SIZE
            )
        return self.landmarker.landmarks_of_boxes(images, boxes)

    def detector(self, image: np.ndarray) -> np.ndarray:
        self.detections += 1
        truth = self.video[self.now][1]
        return np.zeros((0, 4)) if truth is None else landmark_box(truth)[None] + [-8, -20, 8, 4]

    def run(self, smoothing: dict | None = None) -> list[dict]:
        tracker = FaceTracker(self.landmarks_of_boxes, self.detector, smoothing=smoothing)
        records = []
        for now, (frame, _) in enumerate(self.video):
            self.now = now
            records.append(tracker.step(frame, now / 30))
        return records


def test_tracker_follows_a_moving_turning_face_from_one_detection() -> None:
    video = OracleVideo(frames=90)
    records = video.run()
    truth = np.stack([lm for _, lm in video.video])
    assert video.detections == 1 and [r["detector"] for r in records] == [True] + [False] * 89
    assert all(len(r["faces"]) == 1 and r["faces"][0]["track"] == 0 for r in records)
    predicted = np.stack([r["faces"][0]["landmarks"] for r in records])
    # The face really moves and turns: the truth travels pixels a frame; the tracked landmarks stay on it.
    metrics = tracking_metrics(predicted, truth)
    assert metrics["truth_motion_px"] > 2.0
    # What is left is the oracle's decoding (DARK on 32x32 heatmaps): about a tenth of a pixel.
    assert metrics["error_px"] < 0.2 and metrics["jitter_px"] < 0.2
    # Each frame's crop is the box of the previous frame's landmarks.
    for t in range(1, 90):
        np.testing.assert_allclose(records[t]["faces"][0]["box"], landmark_box(predicted[t - 1]))
    assert len(video.asked) == 90


def test_a_lost_face_brings_the_detector_back_until_it_is_found() -> None:
    video = OracleVideo(frames=50, away=(20, 30))
    records = video.run()
    ran = [t for t, r in enumerate(records) if r["detector"]]
    assert ran == [0, *range(20, 31)]  # first frame, then every frame from the loss to the return
    assert [len(r["faces"]) for r in records] == [1] * 20 + [0] * 10 + [1] * 20
    assert {r["faces"][0]["track"] for r in records[30:]} == {1}  # a new track after the loss
    truth = np.stack([lm for _, lm in video.video[30:]])
    predicted = np.stack([r["faces"][0]["landmarks"] for r in records[30:]])
    assert tracking_metrics(predicted, truth)["error_px"] < 0.2


def test_smoothing_removes_jitter_from_noisy_landmarks() -> None:
    video = OracleVideo(frames=150, noise=1.0)
    truth = np.stack([lm for _, lm in video.video])
    raw = video.run()
    smooth = video.run(SMOOTHING)
    result = {}
    for name, records in (("raw", raw), ("smooth", smooth)):
        result[name] = tracking_metrics(np.stack([r["faces"][0]["landmarks"] for r in records]), truth)
    assert result["raw"]["jitter_px"] > 1.0  # noise of 1 px a coordinate: |difference of two| is about 1.8
    assert result["smooth"]["jitter_px"] < 0.5 * result["raw"]["jitter_px"]
    assert result["smooth"]["jitter_still_px"] < 0.3 * result["raw"]["jitter_still_px"]
    # The price is lag while the face moves: the error grows, but stays within twice the noise's.
    assert result["raw"]["error_px"] < result["smooth"]["error_px"] < 2 * result["raw"]["error_px"]
