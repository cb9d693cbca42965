"""Tests for the crop protocols of `evaluate --crops` (hrnet_lib.evaluate.crops): each protocol's crop by
hand, through an oracle model whose heatmap peaks map back through the crop the face was given, the
detector's matching and its fallback, and the results file's rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from oracle import OracleHeatmaps
from test_report import save_tiny_checkpoint, write_dataset

from hrnet_lib.data.wflw import ANNOTATION_DIR, IMAGE_DIR, Face, load_split
from hrnet_lib.evaluate import crops, report
from hrnet_lib.evaluate.boxes import DETECTOR_SHIFT, DETECTOR_SIDE
from hrnet_lib.evaluate.metrics import nme


def test_parse_protocols() -> None:
    assert crops.parse_protocols("all") == ["landmarks", "rect", "detector"]
    assert crops.parse_protocols("rect,landmarks") == ["rect", "landmarks"]
    for bad in ("", "boxes", "rect,rect"):
        with pytest.raises(ValueError, match="--crops"):
            crops.parse_protocols(bad)


def haar_box_for(centre: np.ndarray, side: float) -> np.ndarray:
    """The Haar detection that `face_box_from_detection` turns into the square (centre, side)."""
    haar = side / DETECTOR_SIDE
    cx, cy = centre[0], centre[1] - DETECTOR_SHIFT * haar
    return np.array([cx - haar / 2, cy - haar / 2, cx + haar / 2, cy + haar / 2])


def test_detections_go_to_the_faces_they_overlap_most() -> None:
    faces = load_split_like([(20.0, 20.0, 60.0), (100.0, 30.0, 40.0)])
    near_second = haar_box_for(np.array([100.0, 32.0]), 40.0)
    near_first = haar_box_for(np.array([21.0, 20.0]), 44.0)
    nowhere = haar_box_for(np.array([300.0, 300.0]), 40.0)
    matched = crops.match_detections(faces, np.stack([nowhere, near_second, near_first]))
    np.testing.assert_array_equal(matched[0], near_first)
    np.testing.assert_array_equal(matched[1], near_second)
    assert crops.match_detections(faces, nowhere[None]) == [None, None]


def load_split_like(squares: list[tuple[float, float, float]]) -> list:
    """Faces whose landmarks span the squares (centre x, centre y, side)."""
    corners = np.array([[-0.5, -0.5], [0.5, 0.5]])
    out = []
    for x, y, side in squares:
        landmarks = np.resize(corners * side + [x, y], (98, 2))
        out.append(Face(image="a.jpg", landmarks=landmarks, box=np.array([0.0, 0.0, 1.0, 1.0])))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_report's dataset with each test face's rectangle moved off its landmark box (x0 - 4, y0 - 6,
    x1 + 9, y1 + 2), so the landmark and rectangle crops differ."""
    root = tmp_path_factory.mktemp("wflw")
    write_dataset(root)
    path = root / ANNOTATION_DIR / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    lines = []
    for line in path.read_text().splitlines():
        fields = line.split()
        box = np.array([float(v) for v in fields[196:200]]) + [-4, -6, 9, 2]
        lines.append(" ".join([*fields[:196], *(f"{v:.0f}" for v in box), *fields[200:]]))
    path.write_text("\n".join(lines) + "\n")
    return root


def square(centre: np.ndarray, side: float, peaks: np.ndarray) -> np.ndarray:
    """Where the oracle's peaks land for a crop of `side` (padded) about `centre`, by hand."""
    return centre + (4 * peaks - 32) * side / 64


def test_each_protocol_crops_as_documented(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faces = load_split(dataset, "test")
    # The detector finds the first face of each image (3 px right of its landmark box); the second it misses.
    detections, expected_detector = {}, {}
    for i, face in enumerate(faces):
        low, high = face.landmarks.min(0), face.landmarks.max(0)
        photo = cv2.imread(str(dataset / IMAGE_DIR / face.image))[..., ::-1]
        key = hashlib.sha256(np.ascontiguousarray(photo).tobytes()).hexdigest()
        if i % 2 == 0:
            centre, side = (low + high) / 2 + [3.0, 0.0], float((high - low).max())
            detections[key] = haar_box_for(centre, side)[None]
            expected_detector[i] = (centre, side * 1.25)
        else:
            box = face.box
            expected_detector[i] = ((box[:2] + box[2:]) / 2, float((box[2:] - box[:2]).max()) * 1.25)

    def fake_haar(image: np.ndarray) -> np.ndarray:
        return detections[hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()]

    peaks = np.random.default_rng(3).integers(2, 14, size=(98, 2))
    config = {"input_size": 64, "heatmap_size": 16, "model": "oracle"}
    monkeypatch.setattr(report, "load_model", lambda path, trust=False: (OracleHeatmaps(peaks, 16), config))
    monkeypatch.setattr(crops, "haar_detections", fake_haar)
    checkpoint = tmp_path / "best.pt"
    save_tiny_checkpoint(checkpoint)
    out = tmp_path / "results.json"
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(out), "--quiet"]
    assert report.main([*argv, "--crops", "all", "--no-flip", "--workers", "0"]) == 0

    arrays = np.load(out.with_name("results_predictions.npz"))
    for i, face in enumerate(faces):
        low, high = face.landmarks.min(0), face.landmarks.max(0)
        by_hand = {
            "landmarks": ((low + high) / 2, float((high - low).max()) * 1.25),
            "rect": ((face.box[:2] + face.box[2:]) / 2, float((face.box[2:] - face.box[:2]).max()) * 1.25),
            "detector": expected_detector[i],
        }
        for name, (centre, side) in by_hand.items():
            np.testing.assert_allclose(
                arrays[f"predictions_{name}"][i], square(centre, side, peaks), atol=1e-6
            )
            np.testing.assert_allclose(arrays[f"crops_{name}"][i], [*centre, side], atol=1e-9)
    np.testing.assert_array_equal(arrays["predictions"], arrays["predictions_landmarks"])

    results = json.loads(out.read_text())
    assert list(results["crop_protocols"]) == ["landmarks", "rect", "detector"]
    detector = results["crop_protocols"]["detector"]
    assert detector["detected"] == 4 and detector["missed"] == 4 and detector["missed_faces"] == [1, 3, 5, 7]
    assert results["provenance"]["crops"] == "landmarks"
    assert results["table"]["model"] == results["crop_protocols"]["landmarks"]["table"]
    rows = report.protocol_rows(results)
    assert [row[0] for row in rows] == ["landmarks", "rect", "detector"] and rows[2][-1] == 4
    assert rows[0][-1] is None and rows[1][-1] is None
    assert rows[1][1] == pytest.approx(results["crop_protocols"]["rect"]["table"]["test"]["nme"])
    for row in rows:  # the same four faces (those detected) under each protocol
        errors = nme(arrays[f"predictions_{row[0]}"], arrays["landmarks"])[[0, 2, 4, 6]]
        assert row[-2] == pytest.approx(100 * errors.mean())
    assert "faces the detector found" in report.format_protocols(results)


def test_rect_protocol_alone_fills_the_table(dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.pt"
    save_tiny_checkpoint(checkpoint)
    out = tmp_path / "results.json"
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(out), "--quiet"]
    assert report.main([*argv, "--crops", "rect", "--workers", "0", "--device", "cpu"]) == 0
    results = json.loads(out.read_text())
    assert results["provenance"]["crops"] == "rect" and "rect crops" in results["provenance"]["annotations"]
    assert list(results["crop_protocols"]) == ["rect"]


def test_crop_views_show_the_face_where_its_landmarks_say() -> None:
    """A white dot at (70, 40) of a photo seen through two crop squares: the dot's crop pixel is white and
    the landmark is mapped to it (centre of a square of side 64 at size 64: one photo pixel a pixel)."""
    photo = np.zeros((100, 120, 3), np.uint8)
    photo[38:43, 68:73] = 255
    landmarks = np.array([[70.0, 40.0]])
    squares = {"near": np.array([70.0, 40.0, 64.0]), "left": np.array([90.0, 40.0, 32.0])}
    views, points = crops.crop_views(photo, landmarks, squares, size=64)
    np.testing.assert_allclose(points[0], [[32.0, 32.0]])
    np.testing.assert_allclose(points[1], [[32.0 - 20 * 2, 32.0]])  # 20 px left, two crop pixels a pixel
    assert views[0][32, 32].tolist() == [255, 255, 255] and views[0].shape == (64, 64, 3)
    assert views[1][32, 0].tolist() == [0, 0, 0]
