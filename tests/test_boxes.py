"""Tests for hrnet_lib.evaluate.boxes: a detection's face box, the box-to-crop rule and the crop itself,
checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hrnet_lib.evaluate.boxes import (
    PredictError,
    box_iou,
    crop_faces,
    crop_of_box,
    face_box_from_detection,
    landmark_box,
)


def test_detection_becomes_a_lower_tighter_face_box() -> None:
    box = face_box_from_detection(np.array([100.0, 200.0, 200.0, 300.0]))
    # side 100 -> 90; centre (150, 250) moved down by 10
    np.testing.assert_allclose(box, [105.0, 215.0, 195.0, 305.0])


def test_crop_is_the_square_of_the_longer_side_padded() -> None:
    centre, scale = crop_of_box(np.array([10.0, 20.0, 50.0, 100.0]))
    np.testing.assert_allclose(centre, [30.0, 60.0])
    np.testing.assert_allclose(scale, [100.0, 100.0])  # 80 x 1.25
    with pytest.raises(PredictError, match="x1 > x0"):
        crop_of_box(np.array([10.0, 20.0, 10.0, 100.0]))


def test_landmark_box_and_iou_by_hand() -> None:
    np.testing.assert_allclose(landmark_box(np.array([[3.0, 4.0], [1.0, 9.0], [2.0, 2.0]])), [1, 2, 3, 9])
    assert box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == pytest.approx(50 / 150)
    assert box_iou(np.array([0, 0, 10, 10]), np.array([10, 0, 20, 10])) == 0.0


def test_crop_shows_the_box_centred_and_scaled() -> None:
    """A 40x40 white square in a black photo, boxed exactly: the 64-pixel crop shows it 64 / 1.25 = 51.2
    pixels wide around the crop's centre, and black outside the photo."""
    photo = np.zeros((100, 120, 3), np.uint8)
    photo[30:70, 50:90] = 255
    crops, centres, scales = crop_faces(photo, np.array([[49.5, 29.5, 89.5, 69.5]]), 64)
    assert crops.shape == (1, 3, 64, 64) and crops.dtype == np.uint8
    np.testing.assert_allclose(centres, [[69.5, 49.5]])
    np.testing.assert_allclose(scales, [[50.0, 50.0]])
    row = crops[0, 0, 32]
    white = np.flatnonzero(row > 127)
    assert white[0] == pytest.approx(32 - 25.6, abs=1) and white[-1] == pytest.approx(32 + 25.6, abs=1)
    assert crops[0, :, 32, 32].tolist() == [255, 255, 255]
