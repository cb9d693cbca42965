"""Flip table, crop box, mmpose crop affine and augmentation draws."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hrnet_lib.data.transforms import (
    FLIP_PAIRS,
    Augment,
    compose_affine,
    face_box,
    flip_image,
    flip_landmarks,
    flip_permutation,
    invert_affine,
    random_augment,
    transform_points,
    warp_matrix,
    warp_points,
)

SELF_SYMMETRIC = {16, 51, 52, 53, 54, 57, 79, 85, 90, 94}  # FACTS.md


def test_flip_pairs_match_facts() -> None:
    assert len(FLIP_PAIRS) == 44
    expected = {(i, 32 - i) for i in range(16)} | {
        (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),
        (55, 59), (56, 58), (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),
        (76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97),
    }  # fmt: skip
    assert set(FLIP_PAIRS) == expected
    used = [k for pair in FLIP_PAIRS for k in pair]
    assert len(used) == len(set(used)) == 88
    assert set(range(98)) - set(used) == SELF_SYMMETRIC


def test_flip_permutation_is_involution() -> None:
    perm = flip_permutation(98)
    assert sorted(perm) == list(range(98))
    np.testing.assert_array_equal(perm[perm], np.arange(98))
    assert {k for k in range(98) if perm[k] == k} == SELF_SYMMETRIC
    assert perm[60] == 72 and perm[96] == 97 and perm[0] == 32
    with pytest.raises(ValueError):
        flip_permutation(68)


def test_flip_landmarks_twice_is_identity_and_mirrors() -> None:
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(0, 500, (98, 2))
    once = flip_landmarks(landmarks, 640)
    np.testing.assert_allclose(flip_landmarks(once, 640), landmarks, atol=1e-12)
    # point 60 (one outer eye corner) moves to slot 72 mirrored, y unchanged
    np.testing.assert_allclose(once[72], [639 - landmarks[60, 0], landmarks[60, 1]])
    np.testing.assert_allclose(once[16], [639 - landmarks[16, 0], landmarks[16, 1]])


def test_flipped_image_keeps_landmarks_on_drawn_dots() -> None:
    height, width = 300, 401
    ys, xs = np.meshgrid(np.arange(14), np.arange(7), indexing="ij")
    landmarks = np.stack([20.0 + 25 * xs.ravel(), 15.0 + 20 * ys.ravel()], axis=1)[:98]
    image = np.zeros((height, width), np.uint8)
    for k, (x, y) in enumerate(landmarks):
        cv2.circle(image, (int(x), int(y)), 3, 50 + 2 * k, -1)
    flipped_image = flip_image(image)
    flipped = flip_landmarks(landmarks, width)
    perm = flip_permutation()
    for k, (x, y) in enumerate(flipped):
        assert flipped_image[int(round(y)), int(round(x))] == 50 + 2 * perm[k]
    np.testing.assert_array_equal(flip_image(flipped_image), image)


def test_face_box_is_padded_square_around_extent() -> None:
    landmarks = np.array([[10.0, 20.0], [110.0, 60.0], [50.0, 40.0]])
    center, scale = face_box(landmarks)
    np.testing.assert_allclose(center, [60.0, 40.0])
    np.testing.assert_allclose(scale, [125.0, 125.0])  # max(100, 40) * 1.25
    _, scale = face_box(landmarks, padding=1.0)
    np.testing.assert_allclose(scale, [100.0, 100.0])


def test_warp_matrix_without_rotation_is_scale_and_translation() -> None:
    # 200 px box -> 256 px: factor 1.28; centre (100, 50) -> (128, 128)
    expected = np.array([[1.28, 0.0, 128 - 1.28 * 100], [0.0, 1.28, 128 - 1.28 * 50]])
    np.testing.assert_allclose(warp_matrix((100, 50), (200, 200), 0, (256, 256)), expected, atol=1e-12)
    # non-square output: only the box width sets the factor, the centre goes to (w/2, h/2)
    expected = np.array([[0.5, 0.0, 96 - 0.5 * 30], [0.0, 0.5, 64 - 0.5 * 40]])
    np.testing.assert_allclose(warp_matrix((30, 40), (384, 999), 0, (192, 128)), expected, atol=1e-12)


def test_warp_matrix_90_degrees_by_hand() -> None:
    # mmpose: src_dir = R(+90) [-100, 0] = [0, -100]; src = (100,50), (100,-50), third (0,-50)
    # dst = (128,128), (0,128), third (0,256). So x' = 1.28 y + 64, y' = -1.28 x + 256.
    matrix = warp_matrix((100, 50), (200, 200), 90, (256, 256))
    np.testing.assert_allclose(matrix, [[0.0, 1.28, 64.0], [-1.28, 0.0, 256.0]], atol=1e-12)
    points = np.array([[100.0, 50.0], [100.0, -50.0], [0.0, -50.0]])
    np.testing.assert_allclose(transform_points(points, matrix), [[128, 128], [0, 128], [0, 256]], atol=1e-9)


def test_warp_matrix_matches_float32_three_point_construction() -> None:
    """mmpose's own recipe, re-typed here literally: float32 points and cv2.getAffineTransform."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        center = rng.uniform(0, 1000, 2)
        side = rng.uniform(50, 600)
        rot = rng.uniform(-60, 60)
        out = (256, 256)
        t = np.deg2rad(rot)
        src_dir = np.array([-0.5 * side * np.cos(t), -0.5 * side * np.sin(t)])
        src = np.float32([center, center + src_dir, center + src_dir + [src_dir[1], -src_dir[0]]])
        dst = np.float32([[128, 128], [0, 128], [0, 256]])
        reference = cv2.getAffineTransform(src, dst)
        np.testing.assert_allclose(warp_matrix(center, (side, side), rot, out), reference, atol=2e-3)
        # closed form: a similarity k R(-rot) taking the centre to the crop centre
        k = 256 / side
        linear = k * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        matrix = warp_matrix(center, (side, side), rot, out)
        np.testing.assert_allclose(matrix[:, :2], linear, atol=1e-12)
        np.testing.assert_allclose(transform_points(center, matrix), [128, 128], atol=1e-9)


def _gaussian_blob(shape: tuple[int, int], center: np.ndarray, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


@pytest.mark.parametrize("rotation,side", [(0.0, 180.0), (37.0, 240.0), (-90.0, 300.0), (151.0, 150.0)])
def test_warped_dot_lands_on_transformed_landmark(rotation: float, side: float) -> None:
    landmark = np.array([213.3, 171.8])
    image = _gaussian_blob((400, 500), landmark, sigma=3.0)
    center = np.array([230.0, 190.0])
    matrix = warp_matrix(center, (side, side), rotation, (256, 256))
    crop = cv2.warpAffine(image, matrix, (256, 256), flags=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[:256, :256]
    total = crop.sum()
    centroid = np.array([(crop * xs).sum() / total, (crop * ys).sum() / total])
    expected = transform_points(landmark, matrix)
    assert np.linalg.norm(centroid - expected) < 0.5


def test_affine_helpers() -> None:
    matrix = warp_matrix((100, 50), (200, 200), 33, (256, 256))
    identity = compose_affine(matrix, invert_affine(matrix))
    np.testing.assert_allclose(identity, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(invert_affine(matrix), cv2.invertAffineTransform(matrix), atol=1e-9)
    points = np.random.default_rng(2).uniform(0, 300, (5, 2))
    shift = np.array([[1.0, 0, 3], [0, 1.0, -2]])
    np.testing.assert_allclose(
        transform_points(points, compose_affine(shift, matrix)),
        transform_points(transform_points(points, matrix), shift),
    )


def test_augmentation_statistics_follow_recipe() -> None:
    rng = np.random.default_rng(3)
    aug = Augment()
    draws = [random_augment(rng, aug) for _ in range(20000)]
    flips = np.array([d[0] for d in draws])
    scales = np.array([d[1] for d in draws])
    rotations = np.array([d[2] for d in draws])
    assert abs(flips.mean() - 0.5) < 0.02
    assert scales.min() >= 0.75 and scales.max() <= 1.25
    # clip(1 + 0.25 N): P(|N| > 1) = 0.3173 of draws sit on a bound
    assert abs(np.mean((scales == 0.75) | (scales == 1.25)) - 0.3173) < 0.02
    assert abs(np.median(scales) - 1.0) < 0.01
    rotated = rotations[rotations != 0]
    assert abs(len(rotated) / len(rotations) - 0.6) < 0.02
    assert np.abs(rotations).max() <= 60
    # clip(30 N, +-60): P(|N| > 2) = 0.0455 of rotated draws sit on a bound
    assert abs(np.mean(np.abs(rotated) == 60) - 0.0455) < 0.01
    interior = rotated[np.abs(rotated) < 60]
    assert 24 < interior.std() < 30  # a normal of std 30 truncated at 2 sigma has std 26.4
    no_aug = Augment(flip_prob=0.0, rot_prob=0.0, scale_sigma=0.0)
    assert all(random_augment(rng, no_aug) == (False, 1.0, 0.0) for _ in range(50))


@pytest.mark.parametrize("rotation", [0.0, 25.0, -90.0])
def test_warp_points_are_the_three_pairs_the_matrix_maps(rotation: float) -> None:
    """Centre to crop centre, left-edge middle (turned) to the crop's left-edge middle, and the right
    angle's third point: by hand for the geometry, and the matrix maps each source point onto its pair."""
    center, side = np.array([120.0, 80.0]), 60.0
    src, dst = warp_points(center, (side, side), rotation, (64, 48))
    angle = np.deg2rad(rotation)
    left = center + 30.0 * np.array([-np.cos(angle), -np.sin(angle)])
    np.testing.assert_allclose(src[:2], [center, left], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(src[2] - src[1]), 30.0)
    assert abs(np.dot(src[2] - src[1], src[0] - src[1])) < 1e-9  # a right angle at the second point
    np.testing.assert_allclose(dst, [[32.0, 24.0], [0.0, 24.0], [0.0, 56.0]])
    matrix = warp_matrix(center, (side, side), rotation, (64, 48))
    np.testing.assert_allclose(transform_points(src, matrix), dst, atol=1e-9)
