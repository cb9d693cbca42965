"""Tests for the Python API (hrnet_lib.evaluate.landmarker): hand-made boxes mapped back through the crop,
faces of several images in one forward pass, the colour order of each input kind, the detector hook, the
clear errors, and the onnxruntime backend against the PyTorch one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from oracle import OracleHeatmaps, small_checkpoint
from PIL import Image
from torch import nn

import hrnet_lib
from hrnet_lib.evaluate.boxes import PredictError
from hrnet_lib.evaluate.landmarker import FaceLandmarks, Landmarker, load_image


def expected_points(peaks: np.ndarray, box: np.ndarray, input_size: int = 64, stride: int = 4) -> np.ndarray:
    """Where an oracle's heatmap peaks land in the photo, by hand: the crop is the square of the box's
    longer side padded 1.25 around its centre, and heatmap pixel p is input pixel 4 p."""
    centre = (box[:2] + box[2:]) / 2
    side = 1.25 * (box[2:] - box[:2]).max()
    return centre + (stride * peaks - input_size / 2) * side / input_size


class Counting(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        return self.model(x)


class ColourProbe(nn.Module):
    """Heatmaps peak at column 2 when the crop's first (red) channel is brighter than its third (blue),
    at column 12 otherwise: what the model was shown, red or blue, can be read from the landmarks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.zeros(len(x), 98, 16, 16)
        for i, crop in enumerate(x):
            column = 2 if crop[0].mean() > crop[2].mean() else 12
            maps[i, :, 8, column] = 1.0
        return maps


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("run") / "best.pt")[0]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 200x300 RGB photo: noise with a skin-coloured ellipse."""
    image = np.random.default_rng(0).integers(0, 255, size=(200, 300, 3), dtype=np.uint8)
    cv2.ellipse(image, (150, 100), (40, 55), 0, 0, 360, (210, 160, 120), -1)
    return image


def test_landmarks_map_back_through_each_hand_made_box() -> None:
    peaks = np.random.default_rng(1).integers(2, 14, size=(98, 2))
    boxes = np.array([[100.0, 50.0, 180.0, 150.0], [10.0, 20.0, 50.0, 40.0]])
    landmarker = Landmarker(OracleHeatmaps(peaks, 16), input_size=64, heatmap_size=16, flip_test=False)
    faces = landmarker(np.zeros((200, 300, 3), np.uint8), boxes, color="bgr")
    assert len(faces) == 2 and all(isinstance(face, FaceLandmarks) for face in faces)
    for box, face in zip(boxes, faces, strict=True):
        np.testing.assert_allclose(face.landmarks, expected_points(peaks, box), atol=1e-6)
        np.testing.assert_allclose(face.scores, 1.0)
        np.testing.assert_array_equal(face.box, box)
        assert face.landmarks.dtype == np.float64 and face.landmarks.shape == (98, 2)


def test_faces_of_several_images_share_one_forward_pass() -> None:
    peaks = np.random.default_rng(2).integers(2, 14, size=(98, 2))
    model = Counting(OracleHeatmaps(peaks, 16))
    landmarker = Landmarker(model, input_size=64, heatmap_size=16, flip_test=False)
    first, second = np.zeros((120, 160, 3), np.uint8), np.zeros((90, 90, 3), np.uint8)
    boxes = [
        np.array([[10.0, 10.0, 60.0, 70.0], [80.0, 20.0, 150.0, 100.0]]),
        np.array([5.0, 5.0, 50.0, 40.0]),
    ]
    faces = landmarker.predict([first, second], boxes, color="rgb")
    assert model.batches == [3]  # three faces, one pass
    assert [len(image_faces) for image_faces in faces] == [2, 1]
    np.testing.assert_allclose(faces[0][1].landmarks, expected_points(peaks, boxes[0][1]), atol=1e-6)
    np.testing.assert_allclose(faces[1][0].landmarks, expected_points(peaks, boxes[1]), atol=1e-6)
    small = Landmarker(model, input_size=64, heatmap_size=16, flip_test=False, batch_size=2)
    model.batches.clear()
    assert len(small.predict([first, second], boxes, color="rgb")[0]) == 2
    assert model.batches == [2, 1]


def test_colour_order_of_every_input_kind(tmp_path: Path) -> None:
    red = np.zeros((80, 80, 3), np.uint8)
    red[..., 0] = 255  # red in RGB order
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), red[..., ::-1])  # OpenCV writes BGR
    landmarker = Landmarker(ColourProbe(), input_size=64, heatmap_size=16, flip_test=False)
    box = [20, 20, 60, 60]

    def column(image, color=None) -> float:
        (face,) = landmarker(image, box, color=color)
        return float(np.median(face.landmarks[:, 0]))

    seen_red = column(red, "rgb")
    assert column(red, "bgr") > seen_red  # the same array read as BGR is blue
    assert column(Image.fromarray(red)) == seen_red
    assert column(str(path)) == seen_red
    assert column(red[..., 0]) > seen_red  # gray: all channels equal, not red
    with pytest.raises(PredictError, match="color='rgb' or color='bgr'"):
        landmarker(red, box)
    np.testing.assert_array_equal(load_image(red, "bgr")[0], red[..., ::-1])


def test_detector_finds_the_boxes_when_none_are_given() -> None:
    peaks = np.random.default_rng(3).integers(2, 14, size=(98, 2))
    seen = []

    def detector(image: np.ndarray) -> np.ndarray:
        seen.append(image.shape)
        return np.array([[30.0, 40.0, 90.0, 100.0]])

    landmarker = Landmarker(
        OracleHeatmaps(peaks, 16), input_size=64, heatmap_size=16, flip_test=False, detector=detector
    )
    (face,) = landmarker(np.zeros((150, 200, 3), np.uint8), color="rgb")
    assert seen == [(150, 200, 3)]
    np.testing.assert_allclose(face.landmarks, expected_points(peaks, np.array([30.0, 40.0, 90.0, 100.0])))
    nobody = Landmarker(OracleHeatmaps(peaks, 16), input_size=64, heatmap_size=16, detector=lambda _: [])
    assert nobody(np.zeros((150, 200, 3), np.uint8), color="rgb") == []


def test_landmarker_is_the_public_api(checkpoint: Path, photo: np.ndarray) -> None:
    landmarker = hrnet_lib.Landmarker(checkpoint, device="cpu", flip_test=True)
    assert (landmarker.input_size, landmarker.heatmap_size) == (64, 16)
    (face,) = landmarker(photo, [110, 45, 190, 155], color="rgb")
    assert (
        face.landmarks.shape == (98, 2) and face.scores.shape == (98,) and np.isfinite(face.landmarks).all()
    )
    # Every point lies in the padded crop (side 1.25 x 110 around the box centre), give or take a heatmap
    # pixel.
    assert np.all(np.abs(face.landmarks - [150, 100]) <= 1.25 * 110 / 2 + 1.25 * 110 / 16 + 1e-6)
    assert set(face.to_json()) == {"box", "landmarks", "scores"}


def test_unreadable_image_names_its_path(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    landmarker = Landmarker(checkpoint)
    with pytest.raises(PredictError, match=f"{bad}: cannot read image"):
        landmarker(bad, [0, 0, 10, 10])
    with pytest.raises(PredictError, match="must be uint8"):
        landmarker(np.zeros((20, 20, 3), np.float32), [0, 0, 10, 10], color="rgb")


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([50, 50, 40, 90], "x1 > x0"),
        ([50, float("nan"), 90, 90], "must be finite"),
        ([300, 10, 400, 90], r"lies wholly outside image 0 \(300 x 200 pixels\)"),
        ([-90, -90, 0, 0], "lies wholly outside"),
        ([1, 2, 3], "needs 4 numbers"),
    ],
)
def test_box_outside_the_photo_is_a_clear_error(checkpoint: Path, photo: np.ndarray, box, message) -> None:
    with pytest.raises(PredictError, match=message):
        Landmarker(checkpoint)(photo, box, color="rgb")


def test_checkpoint_that_is_not_a_landmark_model_is_refused(tmp_path: Path) -> None:
    full, model = small_checkpoint(tmp_path / "full.pt")
    backbone = tmp_path / "backbone.pt"
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    torch.save({"model": weights, "config": torch.load(full)["config"]}, backbone)
    with pytest.raises(ValueError, match="not a trained landmark model"):
        Landmarker(backbone)
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        Landmarker(text)
    with pytest.raises(ValueError, match="backend"):
        Landmarker(tmp_path / "full.pt", backend="tensorrt")


def test_onnxruntime_backend_matches_torch_with_the_flip_test(checkpoint: Path, photo: np.ndarray) -> None:
    boxes = np.array([[110.0, 45.0, 190.0, 155.0], [20.0, 30.0, 90.0, 110.0]])
    reference = Landmarker(checkpoint, flip_test=True, precision="fp32")(
        photo, boxes, color="rgb"
    )  # as onnxruntime
    onnx = Landmarker(checkpoint, flip_test=True, backend="onnxruntime")
    assert onnx.config["onnx_parity"]["landmark_max_diff_px"] <= 0.01
    for ours, theirs in zip(onnx(photo, boxes, color="rgb"), reference, strict=True):
        np.testing.assert_allclose(ours.landmarks, theirs.landmarks, atol=0.01, rtol=0)
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4 * theirs.scores.max(), rtol=0)
