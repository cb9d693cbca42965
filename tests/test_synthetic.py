"""Synthetic WFLW: official layout, determinism, landmark meaning, and flags that match the drawn effects."""

from __future__ import annotations

import errno
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrnet_lib.data import synthetic as syn
from hrnet_lib.data import wflw

ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
SUBSETS = {
    "pose": "largepose",
    "expression": "expression",
    "illumination": "illumination",
    "makeup": "makeup",
    "occlusion": "occlusion",
    "blur": "blur",
}
# The 44 horizontal flip pairs of WFLW, typed from the reference facts (independent of the library's table).
FLIP_PAIRS = [(i, 32 - i) for i in range(16)] + [
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),
    (55, 59), (56, 58),
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),
    (76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97),
]  # fmt: skip
SELF_SYMMETRIC = (16, 51, 52, 53, 54, 57, 79, 85, 90, 94)
N_TRAIN, N_TEST, SEED = 6, 8, 3


def mirror(points: np.ndarray) -> np.ndarray:
    """Mirror about x = 0 and swap every left point with its right partner."""
    perm = np.arange(98)
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return (points * [-1.0, 1.0])[perm]


def read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "wflw"
    return root, syn.synthesize(root, N_TRAIN, N_TEST, seed=SEED, progress=False)


# ---------------------------------------------------------------------------------------- landmarks


def test_template_obeys_the_flip_pair_table() -> None:
    assert len(FLIP_PAIRS) == 44 and len({i for pair in FLIP_PAIRS for i in pair} | set(SELF_SYMMETRIC)) == 98
    template = syn.template_landmarks()
    assert template.shape == (98, 2)
    np.testing.assert_allclose(mirror(template), template, atol=1e-9)
    np.testing.assert_allclose(template[list(SELF_SYMMETRIC), 0], 0.0, atol=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(5):  # every identity is symmetric, not only the average one
        shape = syn.template_landmarks(syn.sample_identity(rng))
        np.testing.assert_allclose(mirror(shape), shape, atol=1e-9)


def test_template_landmarks_mean_what_wflw_means() -> None:
    t = syn.template_landmarks()
    x, y = t[:, 0], t[:, 1]
    assert np.argmax(y[:33]) == 16  # chin is the lowest contour point
    assert x[0] < x[16] < x[32] and np.all(
        np.diff(y[:17]) > 0
    )  # contour runs from image left down to the chin
    assert x[33:42].max() < 0 < x[42:51].min()  # right brow (33-41) on the image left
    assert x[60:68].max() < 0 < x[68:76].min() and x[96] < 0 < x[97]
    assert x[60] < x[64] and x[68] < x[72]  # 60 and 72 are the outer corners
    assert y[33:51].max() < y[60:76].min()  # brows above eyes
    assert np.all(np.diff(y[51:55]) > 0) and y[54] < y[55:60].max()  # bridge top to tip, then nostrils
    assert x[55] < x[57] < x[59]
    assert y[55:60].max() < y[76:96].min() < y[76:96].max() < y[16]  # mouth between nose and chin
    for eye, pupil in ((t[60:68], t[96]), (t[68:76], t[97])):
        assert cv2.pointPolygonTest(eye.astype(np.float32), tuple(map(float, pupil)), False) > 0
    outer = t[76:88].astype(np.float32)
    for p in t[88:96]:
        assert cv2.pointPolygonTest(outer, (float(p[0]), float(p[1])), True) >= -1e-6


def local_contrast(gray: np.ndarray, point: np.ndarray, radius: int) -> float:
    x, y = np.round(point).astype(int)
    patch = gray[y - radius : y + radius + 1, x - radius : x + radius + 1]
    return float(patch.max() - patch.min())


def test_landmarks_lie_on_drawn_structure() -> None:
    for seed in range(4):
        image, drawn, spec = syn.draw_face(seed, effects={}, background=False)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
        radius = max(2, round(0.04 * spec.scale))
        marks = drawn.landmarks
        assert (
            min(local_contrast(gray, p, radius) for p in marks) >= 5
        )  # every landmark sits on an edge or line
        cheeks = [(marks[4] + marks[54]) / 2, (marks[28] + marks[54]) / 2]
        assert max(local_contrast(gray, p, radius) for p in cheeks) < 3  # plain skin between features is flat
        for pupil in (marks[96], marks[97]):
            assert gray[round(pupil[1]), round(pupil[0])] < 40


# ------------------------------------------------------------------------------------------ effects


def face_box(marks: np.ndarray) -> tuple[slice, slice]:
    lo, hi = np.floor(marks.min(0)).astype(int), np.ceil(marks.max(0)).astype(int)
    return slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1)


def roll_and_asymmetry(marks: np.ndarray) -> tuple[float, float]:
    """In-plane angle of the outer-eye-corner line, and the ratio of the two half-face widths at the nose."""
    axis = marks[72] - marks[60]
    angle = abs(math.degrees(math.atan2(axis[1], axis[0])))
    axis = axis / np.linalg.norm(axis)
    left, right = abs(np.dot(marks[54] - marks[0], axis)), abs(np.dot(marks[32] - marks[54], axis))
    return angle, max(left, right) / min(left, right)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_flag_matches_its_effect(seed: int) -> None:
    canvas = (960, 480)  # room beside the face, where no effect may reach
    base_image, base, base_spec = syn.draw_face(seed, effects={}, size=canvas)
    assert not any(base_spec.effects.values()) and not base.covered.any()
    iod = np.linalg.norm(base.landmarks[72] - base.landmarks[60])
    rows, cols = face_box(base.landmarks)
    for effect in ATTRIBUTES:
        image, drawn, spec = syn.draw_face(seed, effects={effect: True}, size=canvas)
        assert spec.effects == {a: a == effect for a in ATTRIBUTES}
        moved = np.abs(drawn.landmarks - base.landmarks).max() / iod
        if effect not in ("pose", "expression"):  # appearance effects leave the geometry alone
            assert moved == 0
        diff = np.abs(image.astype(np.float64) - base_image)
        if effect == "pose":
            angle, ratio = roll_and_asymmetry(drawn.landmarks)
            angle0, ratio0 = roll_and_asymmetry(base.landmarks)
            assert angle0 < 15 and ratio0 < 1.35
            assert angle > 20 or ratio > 1.4
        elif effect == "expression":
            assert moved > 0.04
            assert np.abs(drawn.landmarks[:33] - base.landmarks[:33]).max() / iod < 0.3  # still the same face
        elif effect == "illumination":
            assert diff[rows, cols].mean() > 15
        elif effect == "makeup":
            lips = np.zeros(image.shape[:2], np.uint8)
            cv2.fillPoly(lips, [np.round(drawn.landmarks[76:88]).astype(np.int32)], 1)
            cv2.fillPoly(lips, [np.round(drawn.landmarks[88:96]).astype(np.int32)], 0)
            assert diff[lips > 0].mean() > 20
        elif effect == "occlusion":
            assert drawn.covered.any()
            pix = np.round(drawn.landmarks[drawn.covered]).astype(int)
            assert diff[pix[:, 1], pix[:, 0]].mean() > 20
            free = np.round(drawn.landmarks[~drawn.covered]).astype(int)
            assert np.median(diff[free[:, 1], free[:, 0]].sum(axis=1)) == 0  # most of the face untouched
        elif effect == "blur":
            sharp = cv2.Laplacian(cv2.cvtColor(base_image, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[rows, cols].var()
            soft = cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[rows, cols].var()
            assert soft < 0.5 * sharp
        if effect not in ("pose", "expression"):
            lo, hi = base.landmarks.min(0), base.landmarks.max(0)
            size = (hi - lo).max()
            far = np.ones(image.shape[:2], bool)  # beyond one face size from the landmark box
            far[
                max(0, int(lo[1] - size)) : int(hi[1] + size), max(0, int(lo[0] - size)) : int(hi[0] + size)
            ] = False
            assert diff[far].max() == 0  # nothing changes away from the face


# WFLW's test subset sizes out of 2,500 faces (FACTS.md), the rates the synthetic data should follow.
WFLW_SUBSET_SIZES = {
    "pose": 326,
    "expression": 314,
    "illumination": 698,
    "makeup": 206,
    "occlusion": 736,
    "blur": 773,
}


def test_effect_rates_are_wflw_like() -> None:
    flags = np.array(
        [[syn.sample_face(syn.face_rng(0, "train", i)).effects[a] for a in ATTRIBUTES] for i in range(1500)]
    )
    rates = flags.mean(axis=0)
    expected = np.array([WFLW_SUBSET_SIZES[a] / 2500 for a in ATTRIBUTES])
    np.testing.assert_allclose(rates, expected, atol=0.04)


# ------------------------------------------------------------------------------------------- layout


def test_official_layout_and_field_counts(dataset: tuple[Path, dict]) -> None:
    root, stats = dataset
    ann = root / "WFLW_annotations"
    assert stats["faces"] == {"train": N_TRAIN, "test": N_TEST}
    for split, count in (("train", N_TRAIN), ("test", N_TEST)):
        lines = read_lines(ann / "list_98pt_rect_attr_train_test" / f"list_98pt_rect_attr_{split}.txt")
        assert len(lines) == count and all(len(f) == 207 for f in lines)
        images = {f[-1] for f in lines}
        assert stats["images"][split] == len(images) and len(images) <= count
        for fields in lines:
            event, name = fields[-1].split("/")
            number, label = event.split("--")
            assert number.isdigit() and name.startswith(f"{number}_{label}_") and name.endswith(".jpg")
            assert set(fields[200:206]) <= {"0", "1"}
            image = cv2.imread(str(root / "WFLW_images" / fields[-1]))
            height, width = image.shape[:2]
            assert max(height, width) == 1024 and min(height, width) >= 576
            marks = np.array(fields[:196], dtype=np.float64).reshape(98, 2)
            assert marks.min() >= 0 and np.all(marks < (width, height))  # landmarks inside the image
            box = np.array(fields[196:200], dtype=np.float64)
            lo, hi = marks.min(0), marks.max(0)
            side = (hi - lo).max()
            assert box[0] < box[2] and box[1] < box[3]
            assert (
                np.abs((box[:2] + box[2:]) / 2 - (lo + hi) / 2).max() < 0.25 * side
            )  # a box around the face
            assert 0.7 < (box[2:] - box[:2]).max() / side < 1.3


def test_subset_files_hold_exactly_the_flagged_test_faces(dataset: tuple[Path, dict]) -> None:
    root, stats = dataset
    ann = root / "WFLW_annotations"
    test = read_lines(ann / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt")
    short = [" ".join(f[:196] + f[-1:]) for f in test]
    listed = read_lines(ann / "list_98pt_test" / "list_98pt_test.txt")
    assert all(len(f) == 197 for f in listed) and [" ".join(f) for f in listed] == short
    for k, attribute in enumerate(ATTRIBUTES):
        lines = read_lines(ann / "list_98pt_test" / f"list_98pt_test_{SUBSETS[attribute]}.txt")
        assert all(len(f) == 197 for f in lines)
        flagged = [s for s, f in zip(short, test, strict=True) if f[200 + k] == "1"]
        assert [" ".join(f) for f in lines] == flagged
        assert len(flagged) >= 1 and stats["subsets"][attribute] == len(flagged)  # no empty subset


def test_file_flags_are_the_rendered_effects(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    test = read_lines(root / "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt")
    rendered = []
    for index, faces in enumerate(syn.plan_images(SEED, "test", N_TEST)):
        _, drawn = syn.render_image(SEED, "test", index, faces)
        rendered += drawn
    assert len(rendered) == len(test)
    for fields, face in zip(test, rendered, strict=True):
        assert [int(v) for v in fields[200:206]] == [int(face.effects[a]) for a in ATTRIBUTES]
        np.testing.assert_allclose(
            np.array(fields[:196], dtype=np.float64).reshape(98, 2), face.landmarks, atol=1e-6
        )
        if face.effects["occlusion"]:
            assert face.covered.any()
        else:
            assert not face.covered.any()


def test_deterministic_and_order_independent(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    assert (
        syn.main(
            [
                "--root",
                str(tmp_path),
                "--train",
                str(N_TRAIN),
                "--test",
                str(N_TEST),
                "--seed",
                str(SEED),
                "--quiet",
                "--workers",
                "2",  # two rendering processes write the bytes the fixture's one process wrote
            ]
        )
        == 0
    )
    for path in sorted((root / "WFLW_annotations").rglob("*.txt")):
        assert (tmp_path / path.relative_to(root)).read_bytes() == path.read_bytes()
    for path in sorted((root / "WFLW_images").rglob("*.jpg")):
        assert (tmp_path / path.relative_to(root)).read_bytes() == path.read_bytes()
    # an image drawn on its own (out of order) is the same image
    plan = syn.plan_images(SEED, "train", N_TRAIN)
    last = len(plan) - 1
    image, _ = syn.render_image(SEED, "train", last, plan[last])
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, syn.JPEG_QUALITY])[1].tobytes()
    assert jpeg == (root / "WFLW_images" / syn.image_name(SEED, "train", last)).read_bytes()
    other = syn.synthesize(tmp_path / "other", N_TRAIN, N_TEST, seed=SEED + 1, progress=False)
    name = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt"
    assert (Path(other["root"]) / name).read_bytes() != (root / name).read_bytes()


def test_reader_round_trip(dataset: tuple[Path, dict]) -> None:
    root, stats = dataset
    report, errors = wflw.check_dataset(root, progress=False)
    assert errors == []
    assert report["splits"]["train"]["faces"] == N_TRAIN and report["splits"]["test"]["faces"] == N_TEST
    assert report["splits"]["test"]["attributes"] == stats["attributes"]["test"]
    test_faces = wflw.load_split(root, "test")
    subsets = wflw.load_subsets(root, test_faces)
    for attribute in ATTRIBUTES:
        expected = [i for i, face in enumerate(test_faces) if face.attributes[attribute]]
        assert subsets[attribute].tolist() == expected and len(expected) == stats["subsets"][attribute]
    train_faces = wflw.load_split(root, "train")
    assert len(train_faces) == N_TRAIN and all(face.landmarks.shape == (98, 2) for face in train_faces)


# ------------------------------------------------------------------------------- an existing root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def synth_cli(root: Path, *extra: str) -> int:
    return syn.main(["--root", str(root), "--train", "3", "--test", "6", "--seed", "9", "--quiet", *extra])


def test_cli_refuses_an_existing_dataset_and_leaves_it_byte_identical(
    dataset: tuple[Path, dict], tmp_path: Path, capsys
) -> None:
    root = tmp_path / "wflw"
    shutil.copytree(dataset[0], root)
    before = snapshot(root)
    assert synth_cli(root) == 1
    err = capsys.readouterr().err
    assert f"error: {root} is not empty" in err and "--force" in err
    assert snapshot(root) == before
    with pytest.raises(syn.ExistingDatasetError, match="WFLW_annotations already exists"):
        syn.synthesize(root, 3, 6, seed=9, progress=False)
    assert snapshot(root) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")  # any non-empty root, dataset or not
    assert synth_cli(other) == 1
    assert snapshot(other) == {"notes.txt": b"mine"}


def test_cli_force_replaces_a_synthetic_dataset_without_orphans(
    dataset: tuple[Path, dict], tmp_path: Path
) -> None:
    root = tmp_path / "wflw"
    shutil.copytree(dataset[0], root)
    event = next(p for p in (root / "WFLW_images").iterdir())
    leftover = event / f".{event.name.replace('--', '_')}_synth3_train_000099.jpg.tmp123"
    leftover.write_bytes(b"left by an interrupted run")
    (root / ".done").write_text("")  # not the synthesiser's: kept
    assert synth_cli(root, "--force") == 0
    on_disk = {
        str(p.relative_to(root / "WFLW_images")) for p in (root / "WFLW_images").rglob("*") if p.is_file()
    }
    faces = wflw.load_split(root, "train") + wflw.load_split(root, "test")
    assert on_disk == {face.image for face in faces}  # every image is listed: no old image, no leftover
    assert len(wflw.load_split(root, "test")) == 6 and (root / ".done").exists()
    assert wflw.check_dataset(root, progress=False)[1] == []


def test_cli_force_does_not_delete_a_dataset_it_did_not_write(tmp_path: Path, capsys) -> None:
    root = tmp_path / "WFLW"
    photo = root / "WFLW_images" / "0--Parade" / "0_Parade_marchingband_1_116.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a real photo")
    annotations = (
        root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    )
    annotations.parent.mkdir(parents=True)
    annotations.write_text("real annotations\n")
    before = snapshot(root)
    assert synth_cli(root, "--force") == 1
    err = capsys.readouterr().err
    assert f"{photo} was not written by the synthesiser" in err and "nothing was deleted" in err
    assert snapshot(root) == before


def test_cli_into_a_folder_it_cannot_write_is_a_clear_error(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only root is refused before any rendering; a write that fails later (permission, a full
    disk) is a message naming the root, not a PermissionError traceback. (As root, a read-only folder is
    still writable, so the refusals are simulated.)"""
    root = tmp_path / "wflw"
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != root)
    monkeypatch.setattr(syn, "synthesize", lambda *a, **k: pytest.fail("rendered into a read-only root"))
    assert synth_cli(root) == 1
    assert (
        f"error: --root {root / 'WFLW_images'}: the folder {root} is not writable" in capsys.readouterr().err
    )
    monkeypatch.undo()

    def denied(path: Path, data: bytes) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(syn, "atomic_bytes", denied)
    assert synth_cli(tmp_path / "other") == 1
    err = capsys.readouterr().err
    assert f"error: cannot write the dataset under {tmp_path / 'other'}: [Errno 13] Permission denied" in err
    assert "Traceback" not in err
