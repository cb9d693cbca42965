"""Tests for hrnet_lib.evaluate.metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrnet_lib.evaluate.metrics import (
    bootstrap_ci,
    ced,
    fr_auc,
    mean_shape,
    mean_shape_baseline,
    nme,
    per_landmark_nme,
    place_shape,
)


def face(iod: float = 10.0, seed: int = 0) -> np.ndarray:
    """98 random points with the outer eye corners 60 and 72 exactly ``iod`` pixels apart."""
    points = np.random.default_rng(seed).uniform(0, 50, size=(98, 2))
    points[60] = (20.0, 30.0)
    points[72] = (20.0 + iod, 30.0)
    return points


def test_nme_hand_computed() -> None:
    gt = face(10.0)
    pred = gt.copy()
    pred[:49] += (0.0, 2.0)  # half the points 2 px off: 0.2 each, mean 0.1
    pred[49:] += (3.0, 4.0)  # the other half 5 px off: 0.5 each
    np.testing.assert_allclose(nme(pred[None], gt[None]), [0.5 * 0.2 + 0.5 * 0.5])
    gt2 = face(20.0, seed=1)
    pred2 = gt2 + (6.0, 8.0)  # 10 px over an inter-ocular distance of 20
    np.testing.assert_allclose(nme(np.stack([pred, pred2]), np.stack([gt, gt2])), [0.35, 0.5])


def test_nme_normalises_by_ground_truth_not_prediction_and_accepts_tensors() -> None:
    gt = face(10.0)
    pred = gt.copy()
    pred[72] = (20.0 + 30.0, 30.0)  # moving a predicted eye corner does not change the normaliser
    expected = 20.0 / 10.0 / 98
    np.testing.assert_allclose(nme(pred[None], gt[None]), [expected])
    out = nme(torch.tensor(pred[None]), torch.tensor(gt[None]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [expected])


def test_nme_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        nme(np.zeros((1, 98, 2)), np.zeros((1, 97, 2)))
    with pytest.raises(ValueError, match="98-point"):
        nme(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))
    with pytest.raises(ValueError, match="60 and 72"):
        nme(np.zeros((1, 98, 2)), np.zeros((1, 98, 2)))


def test_per_landmark_nme() -> None:
    gt = np.stack([face(10.0), face(20.0, seed=2)])
    pred = gt.copy()
    pred[0, 5] += (1.0, 0.0)  # 0.1 on face 0
    pred[1, 5] += (0.0, 6.0)  # 0.3 on face 1
    pred[1, 7] += (4.0, 0.0)  # 0.2 on face 1 only
    expected = np.zeros(98)
    expected[5], expected[7] = 0.2, 0.1
    np.testing.assert_allclose(per_landmark_nme(pred, gt), expected, atol=1e-12)
    # The per-face mean and the per-landmark mean agree on the overall mean.
    assert per_landmark_nme(pred, gt).mean() == pytest.approx(nme(pred, gt).mean())


@pytest.mark.parametrize(
    ("errors", "fr", "auc"),
    [
        ([0.0, 0.0, 0.0], 0.0, 1.0),
        ([0.05, 0.05], 0.0, 0.5),
        ([0.2, 0.0], 0.5, 0.5),
        ([0.10], 0.0, 0.0),  # exactly at the threshold is not a failure, and adds no area
        ([0.02, 0.04, 0.06, 0.08, 0.5], 0.2, (0.8 + 0.6 + 0.4 + 0.2) / 5),
    ],
)
def test_fr_auc_hand_values(errors: list[float], fr: float, auc: float) -> None:
    got_fr, got_auc = fr_auc(np.array(errors), 0.10)
    assert got_fr == pytest.approx(fr)
    assert got_auc == pytest.approx(auc)


def test_auc_equals_area_under_ced() -> None:
    errors = np.random.default_rng(0).gamma(4.0, 0.012, size=500)
    thresholds, fraction = ced(errors, 0.10, steps=20000)
    area = np.sum((fraction[1:] + fraction[:-1]) / 2 * np.diff(thresholds)) / 0.10
    assert fr_auc(errors, 0.10)[1] == pytest.approx(area, abs=1e-4)
    # The 1e-4 trapezoid grid that published evaluation scripts use agrees within 5e-4.
    grid = np.arange(0, 0.10 + 1e-4 / 2, 1e-4)
    coarse = np.array([np.mean(errors <= t) for t in grid])
    assert fr_auc(errors, 0.10)[1] == pytest.approx(np.trapezoid(coarse, grid) / 0.10, abs=5e-4)


def test_ced_hand_values() -> None:
    thresholds, fraction = ced(np.array([0.015, 0.045, 0.085]), 0.10, steps=10)
    np.testing.assert_allclose(thresholds, np.linspace(0, 0.1, 11))
    np.testing.assert_allclose(fraction, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1])


def test_fr_auc_and_ced_reject_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fr_auc(np.array([]))
    with pytest.raises(ValueError, match="at least one"):
        ced(np.array([]))


def test_mean_shape_baseline_recovers_a_shared_shape() -> None:
    shape = np.random.default_rng(3).uniform(-0.4, 0.4, size=(98, 2))
    train_centers = np.array([[100.0, 50.0], [300.0, 400.0], [20.0, 30.0]])
    train_sides = np.array([50.0, 200.0, 10.0])
    train = place_shape(shape, train_centers, train_sides)
    np.testing.assert_allclose(mean_shape(train, train_centers, train_sides), shape)
    test_centers = np.array([[60.0, 70.0], [500.0, 100.0]])
    test_sides = np.array([[80.0, 80.0], [120.0, 120.0]])  # (M, 2) square sides accepted too
    pred = mean_shape_baseline(train, train_centers, train_sides, test_centers, test_sides)
    np.testing.assert_allclose(pred, place_shape(shape, test_centers, test_sides[:, 0]))


def test_mean_shape_is_the_mean_in_crop_coordinates() -> None:
    a = np.zeros((98, 2))
    b = np.zeros((98, 2))
    a[0] = (110.0, 100.0)  # +0.1 of a 100 px crop centred at (100, 100)
    b[0] = (0.0, 15.0)  # +0.3 in y of a 50 px crop centred at (0, 0)
    shape = mean_shape(np.stack([a, b]), np.array([[100.0, 100.0], [0.0, 0.0]]), np.array([100.0, 50.0]))
    np.testing.assert_allclose(shape[0], [0.05, 0.15])
    np.testing.assert_allclose(shape[1], [(-1.0 + 0.0) / 2, (-1.0 + 0.0) / 2])


def test_bootstrap_interval_of_a_mean_matches_normal_theory() -> None:
    """For 2,500 normal errors of spread 1 the 95% interval of the mean is about +-1.96 / 50 around it."""
    values = np.random.default_rng(3).normal(4.0, 1.0, size=2500)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * values.std() / 50, rel=0.1)
    assert bootstrap_ci(values) == (low, high)  # seeded: the same report twice
    narrow = bootstrap_ci(values, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high
    assert bootstrap_ci(np.full(7, 0.03)) == pytest.approx((0.03, 0.03))  # no spread, no interval
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(values, confidence=95)


def test_paired_interval_is_tighter_than_either_model_s() -> None:
    """Two models that err alike face by face: the interval of their per-face differences is narrow and
    excludes 0 where each model's own interval overlaps the other's."""
    rng = np.random.default_rng(4)
    hard = rng.gamma(2.0, 0.02, size=2500)  # how hard each face is, shared by both models
    a, b = hard + 0.0005 + rng.normal(0, 0.001, 2500), hard + rng.normal(0, 0.001, 2500)
    (a_low, a_high), (b_low, b_high) = bootstrap_ci(a), bootstrap_ci(b)
    assert a_low < b_high and b_low < a_high
    low, high = bootstrap_ci(a - b)
    assert 0 < low < 0.0005 < high
