"""Gaussian heatmap targets: mmpose MSEHeatmap (rounded centre) and DARK's unbiased encoding."""

from __future__ import annotations

import numpy as np
import pytest

from hrnet_lib.data.targets import encode_heatmaps


def test_shapes_dtypes_and_peak() -> None:
    heatmaps, weights = encode_heatmaps(np.array([[10.3, 20.7], [40.0, 5.0]]), (64, 48))
    assert heatmaps.shape == (2, 48, 64) and heatmaps.dtype == np.float32
    assert weights.shape == (2,) and weights.dtype == np.float32
    # rounded position int(x + 0.5): (10, 21); peak exactly 1
    assert np.unravel_index(heatmaps[0].argmax(), heatmaps[0].shape) == (21, 10)
    assert heatmaps[0, 21, 10] == 1.0
    np.testing.assert_array_equal(weights, [1, 1])


def test_values_by_hand() -> None:
    heatmaps, _ = encode_heatmaps(np.array([[30.0, 30.0]]), sigma=2.0)
    row = heatmaps[0, 30]
    assert row[31] == pytest.approx(np.exp(-1 / 8))
    assert row[33] == pytest.approx(np.exp(-9 / 8))
    assert heatmaps[0, 32, 33] == pytest.approx(np.exp(-13 / 8))
    # the patch has radius 3 sigma = 6: nonzero at offset 6, zero at 7
    assert row[24] == pytest.approx(np.exp(-36 / 8)) and row[36] > 0
    assert row[23] == 0 and row[37] == 0 and heatmaps[0, 37, 30] == 0
    assert np.count_nonzero(heatmaps[0]) == 13 * 13


def test_argmax_decode_within_a_pixel() -> None:
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 63, (98, 2))
    heatmaps, weights = encode_heatmaps(keypoints)
    flat = heatmaps.reshape(98, -1).argmax(axis=1)
    decoded = np.stack([flat % 64, flat // 64], axis=1)
    assert np.abs(decoded - keypoints).max() <= 0.5 + 1e-9
    assert np.all(weights == 1)


def test_unbiased_centroid_within_a_tenth_of_a_pixel() -> None:
    rng = np.random.default_rng(1)
    keypoints = rng.uniform(12, 52, (98, 2))
    heatmaps, weights = encode_heatmaps(keypoints, unbiased=True)
    assert np.all(weights == 1)
    ys, xs = np.mgrid[:64, :64]
    for k in range(98):
        peak_y, peak_x = np.unravel_index(heatmaps[k].argmax(), (64, 64))
        window = (np.abs(xs - peak_x) <= 9) & (np.abs(ys - peak_y) <= 9)
        h = heatmaps[k] * window
        centroid = np.array([(h * xs).sum(), (h * ys).sum()]) / h.sum()
        assert np.linalg.norm(centroid - keypoints[k]) < 0.1
    # exact value: an untruncated Gaussian at the sub-pixel position
    assert heatmaps[0, 0, 0] == pytest.approx(np.exp(-(keypoints[0] ** 2).sum() / 8), rel=1e-5)
    biased, _ = encode_heatmaps(keypoints)
    assert not np.allclose(biased, heatmaps)


@pytest.mark.parametrize("unbiased", [False, True])
def test_weights_zero_outside(unbiased: bool) -> None:
    keypoints = np.array(
        [[-20.0, 30.0], [30.0, 80.0], [70.0, 70.0], [-3.0, 30.0], [66.0, 10.0], [30.0, 30.0]]
    )
    heatmaps, weights = encode_heatmaps(keypoints, unbiased=unbiased)
    np.testing.assert_array_equal(weights, [0, 0, 0, 1, 1, 1])
    assert np.all(heatmaps[:3] == 0)
    # partly outside: the visible part of the Gaussian is there, cut at the border. mmpose rounds with
    # int(x + 0.5), which truncates toward zero: x = -3 gives centre -2, so column 0 is 2 px away.
    distance = 3.0 if unbiased else 2.0
    assert heatmaps[3, 30, 0] == pytest.approx(np.exp(-(distance**2) / 8), rel=1e-5)
    assert heatmaps[4, 10, 63] == pytest.approx(np.exp(-9 / 8), rel=1e-5)


def test_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="K, 2"):
        encode_heatmaps(np.zeros((98, 3)))


@pytest.mark.parametrize("unbiased", [False, True])
def test_torch_encoder_matches_numpy(unbiased: bool) -> None:
    """The batched GPU-side encoder gives the numpy encoder's heatmaps and weights, also off the edges."""
    torch = pytest.importorskip("torch")
    from hrnet_lib.data.targets import encode_heatmaps_torch

    rng = np.random.default_rng(2)
    keypoints = rng.uniform(-12, 76, (3, 98, 2))  # some patches partly or wholly off the 64 x 48 map
    keypoints[0, :4] = [[-7.6, 10], [70.4, 10], [10, -6.5], [10, 54.6]]  # patch edges exactly
    heatmaps, weights = encode_heatmaps_torch(torch.from_numpy(keypoints), (64, 48), 2.0, unbiased)
    assert heatmaps.shape == (3, 98, 48, 64) and weights.shape == (3, 98)
    assert heatmaps.dtype == torch.float32
    for b in range(3):
        expected, expected_w = encode_heatmaps(keypoints[b], (64, 48), 2.0, unbiased)
        np.testing.assert_array_equal(weights[b].numpy(), expected_w)
        np.testing.assert_allclose(heatmaps[b].numpy(), expected, rtol=1e-5, atol=1e-7)
        assert np.array_equal(heatmaps[b].numpy() > 0, expected > 0)
    assert 0 < weights.mean() < 1
