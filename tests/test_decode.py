"""Tests for hrnet_lib.evaluate.decode: the standard decoder on hand-made heatmaps, DARK on sub-pixel
Gaussians, and the flip-test identity for a model that is mirror-symmetric by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hrnet_lib.data.transforms import flip_permutation
from hrnet_lib.evaluate.decode import decode_heatmaps, flip_back, gaussian_modulation, predict_heatmaps


def one_map(h: int = 16, w: int = 16, fill: float = 0.0) -> np.ndarray:
    return np.full((1, 1, h, w), fill, dtype=np.float32)


def decode_one(hm: np.ndarray, decoder: str = "standard") -> tuple[np.ndarray, float]:
    kps, scores = decode_heatmaps(hm, decoder)
    return kps[0, 0], float(scores[0, 0])


def test_interior_peak_steps_a_quarter_toward_larger_neighbours() -> None:
    hm = one_map()
    hm[0, 0, 7, 5] = 1.0
    hm[0, 0, 7, 6], hm[0, 0, 7, 4] = 0.6, 0.2  # right neighbour larger: +0.25 in x
    hm[0, 0, 6, 5], hm[0, 0, 8, 5] = 0.5, 0.1  # upper neighbour larger: -0.25 in y
    kp, score = decode_one(hm)
    np.testing.assert_allclose(kp, [5.25, 6.75])
    assert score == pytest.approx(1.0)


def test_equal_neighbours_give_no_step() -> None:
    hm = one_map()
    hm[0, 0, 7, 5] = 1.0
    hm[0, 0, 7, 6] = hm[0, 0, 7, 4] = 0.5
    hm[0, 0, 8, 5] = 0.3  # lower neighbour larger: +0.25 in y
    kp, _ = decode_one(hm)
    np.testing.assert_allclose(kp, [5.0, 7.25])


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (1, 7, [1.0, 7.25]),  # mmpose refines x only where 1 < x < W - 1: not at x = 1
        (0, 7, [0.0, 7.0]),  # and y only where 0 < x: column 0 is refined along neither axis
        (2, 7, [2.25, 7.25]),  # x = 2 is refined
        (14, 7, [14.25, 7.25]),  # x = W - 2 is refined
        (15, 7, [15.0, 7.25]),  # x = W - 1: no right neighbour
        (5, 1, [5.25, 1.0]),  # same bounds for y
        (5, 0, [5.0, 0.0]),  # row 0: x is not refined either (0 < y)
        (0, 0, [0.0, 0.0]),
        (5, 14, [5.25, 14.25]),
        (15, 15, [15.0, 15.0]),
    ],
)
def test_edges_follow_mmpose_bounds(x: int, y: int, expected: list[float]) -> None:
    hm = one_map()
    hm[0, 0, y, x] = 1.0
    if x + 1 < 16:
        hm[0, 0, y, x + 1] = 0.5
    if y + 1 < 16:
        hm[0, 0, y + 1, x] = 0.5
    kp, _ = decode_one(hm)
    np.testing.assert_allclose(kp, expected)


def test_plateau_takes_first_maximum_in_row_major_order() -> None:
    hm = one_map()
    hm[0, 0, 3, 9] = 0.8
    hm[0, 0, 6, 2] = 0.8
    hm[0, 0, 3, 10] = 0.8  # a tie with the right neighbour: the left one (x = 9) wins, stepping right
    kp, score = decode_one(hm)
    np.testing.assert_allclose(kp, [9.25, 3.0])
    assert score == pytest.approx(0.8)


@pytest.mark.parametrize("fill", [-0.3, 0.0])
def test_maximum_at_or_below_zero_gives_minus_one(fill: float) -> None:
    hm = one_map(fill=fill)
    hm[0, 0, 4, 4] = fill / 2 if fill < 0 else 0.0
    hm[0, 0, 4, 5] = fill * 2  # neighbours differ, yet no refinement happens
    kp, score = decode_one(hm)
    np.testing.assert_allclose(kp, [-1.0, -1.0])
    assert score == pytest.approx(fill / 2 if fill < 0 else 0.0)
    kp_dark, _ = decode_one(hm, "dark")
    np.testing.assert_allclose(kp_dark, [-1.0, -1.0])


def naive_standard(heatmaps: np.ndarray) -> np.ndarray:
    """Loop re-statement of mmpose's get_heatmap_maximum + refine_keypoints, with its bounds as
    published (1 < x < W - 1 and 0 < y < H for x; 1 < y < H - 1 and 0 < x < W for y)."""
    b, k, h, w = heatmaps.shape
    out = np.zeros((b, k, 2))
    for i in range(b):
        for j in range(k):
            m = heatmaps[i, j]
            y, x = divmod(int(np.argmax(m)), w)
            if m.max() <= 0:
                out[i, j] = -1
                continue
            px, py = float(x), float(y)
            if 1 < x < w - 1 and 0 < y < h:
                px += 0.25 * np.sign(m[y, x + 1] - m[y, x - 1])
            if 1 < y < h - 1 and 0 < x < w:
                py += 0.25 * np.sign(m[y + 1, x] - m[y - 1, x])
            out[i, j] = px, py
    return out


def test_standard_matches_loop_statement_on_random_maps_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    hm = rng.normal(size=(3, 7, 10, 12)).astype(np.float32)
    hm[0, 1] -= 10  # one all-negative map
    hm[1, 2] = np.round(hm[1, 2])  # many ties
    expected = naive_standard(hm)
    kps, scores = decode_heatmaps(hm)
    assert isinstance(kps, np.ndarray) and kps.shape == (3, 7, 2) and scores.shape == (3, 7)
    np.testing.assert_allclose(kps, expected)
    np.testing.assert_allclose(scores, hm.reshape(3, 7, -1).max(-1))
    kps_t, scores_t = decode_heatmaps(torch.from_numpy(hm))
    assert isinstance(kps_t, torch.Tensor) and kps_t.dtype == torch.float32
    np.testing.assert_allclose(kps_t.numpy(), expected)
    np.testing.assert_allclose(scores_t.numpy(), scores)


def gaussian_maps(centres: np.ndarray, size: int = 64, sigma: float = 2.0) -> np.ndarray:
    """Unnormalised Gaussians (peak 1 at a real-valued centre), one per row of ``centres`` (N, 2)."""
    grid = np.arange(size, dtype=np.float64)
    gx = np.exp(-((grid[None, :] - centres[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((grid[None, :] - centres[:, 1:]) ** 2) / (2 * sigma**2))
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)[None]


def test_dark_beats_standard_on_subpixel_gaussians() -> None:
    rng = np.random.default_rng(1)
    centres = rng.uniform(6, 58, size=(200, 2))
    hm = gaussian_maps(centres)
    hm += rng.normal(scale=0.01, size=hm.shape).astype(np.float32)
    err_standard = np.linalg.norm(decode_heatmaps(hm, "standard")[0][0] - centres, axis=-1).mean()
    err_dark = np.linalg.norm(decode_heatmaps(hm, "dark")[0][0] - centres, axis=-1).mean()
    # A quarter-pixel grid leaves ~0.15 px on average; DARK recovers the sub-pixel centre far better.
    assert err_standard > 0.1
    assert err_dark < 0.5 * err_standard


def test_dark_gives_the_same_keypoints_for_a_tensor_and_leaves_the_input_alone() -> None:
    rng = np.random.default_rng(2)
    hm = gaussian_maps(rng.uniform(6, 58, size=(20, 2)))
    before = hm.copy()
    kps, scores = decode_heatmaps(hm, "dark")
    kps_t, scores_t = decode_heatmaps(torch.from_numpy(hm), "dark")
    assert isinstance(kps_t, torch.Tensor) and kps_t.dtype == torch.float32
    np.testing.assert_array_equal(kps_t.numpy(), kps)
    np.testing.assert_array_equal(scores_t.numpy(), scores)
    np.testing.assert_array_equal(hm, before)  # decoding shares a float32 input; it must not write to it


def test_dark_is_near_exact_on_clean_gaussian() -> None:
    centre = np.array([[20.3, 33.8]])
    kp, _ = decode_one(gaussian_maps(centre), "dark")
    np.testing.assert_allclose(kp, centre[0], atol=0.02)


def rotated_gaussian_maps(centres: np.ndarray, angles: np.ndarray, size: int = 64) -> np.ndarray:
    """Elongated Gaussians (sigmas 3 and 1.5 px) turned by `angles`: their log has a cross term."""
    grid = np.arange(size, dtype=np.float64)
    maps = []
    for (cx, cy), angle in zip(centres, angles, strict=True):
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        precision = np.linalg.inv(rotation @ np.diag([3.0**2, 1.5**2]) @ rotation.T)
        d = np.stack(np.meshgrid(grid - cx, grid - cy, indexing="xy"), axis=-1)  # (y, x, 2) as (dx, dy)
        maps.append(np.exp(-0.5 * np.einsum("yxi,ij,yxj->yx", d, precision, d)))
    return np.stack(maps).astype(np.float32)[None]


def test_dark_uses_the_cross_derivative_of_turned_gaussians() -> None:
    """The blurred log-Gaussian is exactly quadratic, so one Newton step with the full Hessian (cross
    term included) lands on the centre; dropping or flipping the cross term misses by tenths of a pixel."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(12, 52, size=(100, 2))
    hm = rotated_gaussian_maps(centres, rng.uniform(0.3, 1.2, size=100))
    error = np.linalg.norm(decode_heatmaps(hm, "dark")[0][0] - centres, axis=-1)
    assert error.mean() < 0.01 and error.max() < 0.05


def test_dark_smooths_noisy_heatmaps_before_its_newton_step() -> None:
    """With noise of 5% of the peak, the Gaussian modulation keeps the sub-pixel error below 0.1 px
    (without it the finite differences follow the noise: about 0.2 px)."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(8, 56, size=(200, 2))
    hm = gaussian_maps(centres) + rng.normal(scale=0.05, size=(1, 200, 64, 64)).astype(np.float32)
    error = np.linalg.norm(decode_heatmaps(hm, "dark")[0][0] - centres, axis=-1)
    assert error.mean() < 0.1


def test_gaussian_modulation_keeps_maximum_and_blurs() -> None:
    hm = one_map(32, 32)
    hm[0, 0, 10, 20] = 2.0
    out = gaussian_modulation(hm, 11)
    assert out.max() == pytest.approx(2.0)
    assert out[0, 0, 10, 20] == pytest.approx(2.0)
    assert out[0, 0, 10, 22] > 0  # the spike spread to its neighbours
    with pytest.raises(ValueError, match="odd"):
        gaussian_modulation(hm, 10)


def test_unknown_decoder_and_bad_shape_raise() -> None:
    with pytest.raises(ValueError, match="unknown decoder"):
        decode_heatmaps(one_map(), "soft-argmax")
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        decode_heatmaps(np.zeros((4, 4)))


class MirrorModel(nn.Module):
    """Heatmap k = 4x4 average pool of a 'same' convolution with kernel W_k, where the kernel of
    a point's mirror partner is W_k mirrored (self-paired points get symmetric kernels). Hence
    model(flip(x))[:, k] == flip(model(x)[:, perm[k]]) exactly: mirror-equivariant by construction."""

    def __init__(self, perm: np.ndarray, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(len(perm), 3, 5, 5, generator=gen)
        for k, p in enumerate(perm):
            if p == k:
                weight[k] = 0.5 * (weight[k] + weight[k].flip(-1))
            elif p > k:
                weight[p] = weight[k].flip(-1)
        self.conv = nn.Conv2d(3, len(perm), 5, padding=2, bias=False)
        self.conv.weight.data.copy_(weight)
        self.pool = nn.AvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


def shifted_right(h: torch.Tensor) -> torch.Tensor:
    out = h.clone()
    out[..., 1:] = h[..., :-1]
    return out


def check_flip_identity(model: nn.Module, perm: np.ndarray | None) -> None:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    plain = predict_heatmaps(model, images, flip=False)
    flipped = predict_heatmaps(model, images, flip=True, flip_indices=perm)
    # The mirrored pass returns exactly the plain heatmaps once flipped back and re-paired; the
    # published one-pixel shift to the right is then the only difference, averaged in.
    torch.testing.assert_close(flipped, 0.5 * (plain + shifted_right(plain)), rtol=1e-5, atol=1e-6)


def test_flip_test_identity_small_permutation() -> None:
    perm = np.array([5, 4, 2, 3, 1, 0])  # pairs (0, 5), (1, 4); 2 and 3 self-symmetric
    model = MirrorModel(perm)
    model.train()
    check_flip_identity(model, perm)
    assert model.training, "predict_heatmaps must restore the model's mode"
    # Without re-pairing, or with the shift the other way, the identity fails: the check has teeth.
    images = torch.randn(1, 3, 32, 32)
    plain = predict_heatmaps(model, images, flip=False)
    wrong = predict_heatmaps(model, images, flip=True, flip_indices=np.arange(6))
    assert not torch.allclose(wrong, 0.5 * (plain + shifted_right(plain)), atol=1e-3)


def test_flip_test_identity_wflw_permutation_by_default() -> None:
    perm = np.asarray(flip_permutation(98))
    check_flip_identity(MirrorModel(perm), None)


def test_predict_heatmaps_runs_without_grad() -> None:
    model = MirrorModel(np.array([1, 0]))
    out = predict_heatmaps(model, torch.randn(1, 3, 16, 16), flip=True, flip_indices=[1, 0])
    assert out.shape == (1, 2, 4, 4) and out.dtype == torch.float32 and not out.requires_grad


def test_flip_back_mirrors_repairs_and_shifts_one_pixel_by_hand() -> None:
    maps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    back = flip_back(maps, [1, 0])
    for k, source in ((0, 1), (1, 0)):
        mirrored = maps[0, source].flip(-1)
        expected = torch.cat([mirrored[:, :1], mirrored[:, :-1]], dim=1)  # column 0 keeps its value
        assert torch.equal(back[0, k], expected)
    assert torch.equal(maps, torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4))  # input untouched


def test_flip_test_is_the_mean_of_plain_and_flipped_back_heatmaps() -> None:
    model = torch.nn.Conv2d(3, 98, 3, padding=1)
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = (model(images) + flip_back(model(images.flip(-1)))) / 2
    torch.testing.assert_close(predict_heatmaps(model, images, flip=True), expected)
