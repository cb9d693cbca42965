"""The WFLW reader (hrnet_lib.data.wflw) and `python -m hrnet_lib data check` (hrnet_lib.data.cli).

Datasets here are written by the tests themselves in the official layout (numpy faces, tiny cv2 jpgs);
the four real faces of tests/data/wflw-mini are read in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrnet_lib.data import cli, wflw

FIXTURE = Path(__file__).resolve().parent / "data" / "wflw-mini"

IMAGE_W, IMAGE_H = 80, 60


@dataclass
class Spec:
    """A face as the test writes it (independent of the reader's Face)."""

    image: str
    landmarks: np.ndarray
    box: np.ndarray
    flags: dict[str, int] = field(default_factory=dict)


def random_faces(rng: np.random.Generator, images: list[str], per_image: list[int]) -> list[Spec]:
    faces = []
    for image, count in zip(images, per_image, strict=True):
        for _ in range(count):
            landmarks = rng.uniform([2, 2], [IMAGE_W - 2, IMAGE_H - 2], size=(wflw.NUM_KEYPOINTS, 2))
            box = np.round(np.concatenate([landmarks.min(0), landmarks.max(0)]))
            flags = {name: int(rng.integers(0, 2)) for name in wflw.ATTRIBUTES}
            faces.append(Spec(image, landmarks, box, flags))
    return faces


def full_line(face: Spec) -> str:
    coords = [repr(float(v)) for v in face.landmarks.ravel()]
    box = [repr(float(v)) for v in face.box]
    flags = [str(face.flags[name]) for name in wflw.ATTRIBUTES]
    return " ".join([*coords, *box, *flags, face.image])


def short_line(face: Spec) -> str:
    return " ".join([*(repr(float(v)) for v in face.landmarks.ravel()), face.image])


def write_root(root: Path, train: list[Spec], test: list[Spec]) -> Path:
    """Write a dataset in the official layout: images, both splits, list_98pt_test and the six subsets."""
    rng = np.random.default_rng(1)
    for image in {face.image for face in train + test}:
        path = root / wflw.IMAGE_DIR / image
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8))
    for split, faces in (("train", train), ("test", test)):
        path = wflw.annotation_path(root, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(full_line(face) + "\n" for face in faces))
    wflw.test_list_path(root).parent.mkdir(parents=True, exist_ok=True)
    wflw.test_list_path(root).write_text("".join(short_line(face) + "\n" for face in test))
    for name in wflw.ATTRIBUTES:
        lines = [short_line(face) + "\n" for face in test if face.flags[name]]
        wflw.subset_path(root, name).write_text("".join(lines))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[Spec], list[Spec]]:
    rng = np.random.default_rng(0)
    train = random_faces(rng, ["1--Event/1_a.jpg", "1--Event/1_b.jpg", "2--Other/2_c.jpg"], [2, 1, 1])
    test = random_faces(rng, ["3--Test/3_d.jpg", "3--Test/3_e.jpg", "4--More/4_f.jpg"], [3, 1, 2])
    # make sure every subset is non-empty and not the whole test split
    for i, face in enumerate(test):
        for j, name in enumerate(wflw.ATTRIBUTES):
            face.flags[name] = int((i + j) % 3 == 0)
    return write_root(tmp_path / "WFLW", train, test), train, test


def replace_line(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def set_token(index: int, value: str):
    def edit(text: str) -> str:
        tokens = text.split()
        tokens[index] = value
        return " ".join(tokens)

    return edit


# ---------------------------------------------------------------- reading


def test_round_trip(dataset) -> None:
    root, train, test = dataset
    for split, specs in (("train", train), ("test", test)):
        faces = wflw.load_split(root, split)
        assert len(faces) == len(specs)
        for line, (face, spec) in enumerate(zip(faces, specs, strict=True), start=1):
            assert face.image == spec.image
            assert face.landmarks.shape == (98, 2) and face.landmarks.dtype == np.float64
            np.testing.assert_array_equal(face.landmarks, spec.landmarks)  # repr() floats round-trip exactly
            np.testing.assert_array_equal(face.box, spec.box)
            assert face.attributes == {name: bool(spec.flags[name]) for name in wflw.ATTRIBUTES}
            assert face.source == f"{wflw.annotation_path(root, split)}:{line}"
            assert face.center is None and face.scale is None


def test_subsets_are_the_flagged_faces(dataset) -> None:
    root, _, test = dataset
    faces = wflw.load_split(root, "test")
    subsets = wflw.load_subsets(root, faces)
    assert set(subsets) == set(wflw.ATTRIBUTES)
    for name in wflw.ATTRIBUTES:
        expected = [i for i, spec in enumerate(test) if spec.flags[name]]
        assert subsets[name].tolist() == expected
        assert 0 < len(expected) < len(test)


def test_subset_matching_tells_apart_faces_of_one_image(dataset) -> None:
    """Two faces of one image: the subset line must pick the face with its coordinates, not the first."""
    root, _, test = dataset
    assert test[0].image == test[1].image
    flags = {name: 0 for name in wflw.ATTRIBUTES}
    test[0].flags, test[1].flags = dict(flags), dict(flags, blur=1)
    write_root(root, [], test)
    faces = wflw.load_split(root, "test")
    assert wflw.load_subsets(root, faces)["blur"].tolist() == [1] + [
        i for i in range(2, len(test)) if test[i].flags["blur"]
    ]


def test_trailing_blank_lines_are_not_records(dataset) -> None:
    root, train, _ = dataset
    path = wflw.annotation_path(root, "train")
    path.write_text(path.read_text() + "\n\n")
    assert len(wflw.read_annotations(path)) == len(train)


# ---------------------------------------------------------------- malformed input, one at a time

N = 2 * wflw.NUM_KEYPOINTS  # index of x_min in a 207-field line


def same_eye_corners(text: str) -> str:
    """Move point 72 onto point 60 (the outer eye corners used as the NME normaliser)."""
    tokens = text.split()
    tokens[144:146] = tokens[120:122]
    return " ".join(tokens)


def all_landmarks_at(text: str) -> str:
    tokens = text.split()
    tokens[:N] = ["12.5"] * N
    return " ".join(tokens)


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda t: t.rsplit(" ", 2)[0] + " " + t.rsplit(" ", 1)[1], "count", "expected 207"),
        (lambda t: t + " extra", "count", "found 208"),
        (
            lambda t: t.rsplit(" ", 1)[0] + " 51--Dresses/my face.jpg",
            "count",
            "found 208: the image path reads '51--Dresses/my face.jpg' across 2 fields, but the fields are "
            "split at spaces, so a path cannot hold one",
        ),
        (lambda t: "", "count", "found 0"),
        (set_token(10, "abc"), "x5", "not a number"),
        (set_token(7, "nan"), "y3", "not a finite number"),
        (set_token(N + 2, "inf"), "x_max", "not a finite number"),
        (set_token(N + 1, "1,5"), "y_min", "not a number"),
        (set_token(N + 4 + 4, "2"), "occlusion", "flag must be 0 or 1"),
        (set_token(N + 4, "1.0"), "pose", "flag must be 0 or 1"),
        (set_token(-1, "/abs/1_a.jpg"), "image", "relative"),
        (set_token(-1, "../outside.jpg"), "image", "relative"),
        (same_eye_corners, "landmarks", "zero inter-ocular distance"),
        (all_landmarks_at, "landmarks", "all landmarks coincide"),
    ],
)
def test_malformed_line_names_file_line_field(dataset, edit, field: str, message: str) -> None:
    root, _, _ = dataset
    path = wflw.annotation_path(root, "train")
    replace_line(path, 3, edit)
    with pytest.raises(wflw.WFLWFormatError) as info:
        wflw.read_annotations(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert message in err.message
    assert str(err).startswith(f"{path}:3: field {field}: ")


def test_an_extra_number_is_not_taken_for_a_split_image_path(dataset) -> None:
    root, _, _ = dataset
    path = wflw.annotation_path(root, "train")
    replace_line(path, 3, lambda t: t.rsplit(" ", 1)[0] + " 3.5 a.jpg")
    with pytest.raises(wflw.WFLWFormatError) as info:
        wflw.read_annotations(path)
    assert info.value.message == "expected 207 space-separated fields, found 208"


@pytest.mark.parametrize(("token", "field"), [(-1, "image"), (4, "x2"), (N + 1, "y_min")])
def test_non_utf8_byte_names_its_line_and_field(dataset, token: int, field: str) -> None:
    root, _, _ = dataset
    path = wflw.annotation_path(root, "train")
    lines = path.read_bytes().split(b"\n")
    tokens = lines[2].split(b" ")
    tokens[token] = tokens[token][:1] + b"\xff" + tokens[token][1:]
    lines[2] = b" ".join(tokens)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(wflw.WFLWFormatError, match="not UTF-8") as info:
        wflw.read_annotations(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, field)
    stats, errors = wflw.check_dataset(root, progress=False)
    assert [(e.path, e.line, e.field) for e in errors] == [(str(path), 3, field)]  # other lines still read
    assert stats["splits"]["train"]["faces"] == 3


def test_lines_end_at_newline_only(dataset) -> None:
    """Form feed, vertical tab, \\x1c-\\x1e and U+2028 inside a line do not start a new line; CRLF is fine."""
    root, train, _ = dataset
    path = wflw.annotation_path(root, "train")
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace(" ", "\f", 1).replace(" ", "\v", 1)
    lines[1] = lines[1].replace(" ", "\x1c", 1).replace(" ", "\x1e", 1).replace(" ", "\u2028", 1)
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())
    faces = wflw.read_annotations(path)
    assert [face.source for face in faces] == [f"{path}:{i}" for i in range(1, len(train) + 1)]
    np.testing.assert_array_equal(faces[1].landmarks, train[1].landmarks)
    lines[3] = set_token(0, "bad")(lines[3])
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())
    with pytest.raises(wflw.WFLWFormatError, match="not a number") as info:
        wflw.read_annotations(path)
    assert (info.value.line, info.value.field) == (4, "x0")


def test_first_error_is_raised(dataset) -> None:
    root, _, _ = dataset
    path = wflw.annotation_path(root, "train")
    replace_line(path, 4, set_token(0, "bad"))
    replace_line(path, 2, set_token(N + 5, "7"))
    with pytest.raises(wflw.WFLWFormatError) as info:
        wflw.read_annotations(path)
    assert (info.value.line, info.value.field) == (2, "expression")


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(wflw.WFLWFormatError, match="file not found") as info:
        wflw.load_split(tmp_path, "train")
    assert info.value.path == str(wflw.annotation_path(tmp_path, "train")) and info.value.line is None


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        wflw.annotation_path("x", "val")


def test_missing_image(dataset) -> None:
    root, _, _ = dataset
    (root / wflw.IMAGE_DIR / "1--Event/1_b.jpg").unlink()  # the face on line 3 of train
    with pytest.raises(wflw.WFLWFormatError, match="image not found") as info:
        wflw.load_split(root, "train")
    assert (info.value.path, info.value.line, info.value.field) == (
        str(wflw.annotation_path(root, "train")),
        3,
        "image",
    )
    assert len(wflw.load_split(root, "train", check_images=False)) == 4


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_image(dataset, damage: str) -> None:
    root, _, _ = dataset
    image = root / wflw.IMAGE_DIR / "2--Other/2_c.jpg"  # the face on line 4 of train
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a jpeg at all")
    with pytest.raises(wflw.WFLWFormatError, match="image unreadable") as info:
        wflw.load_split(root, "train")
    assert (info.value.line, info.value.field) == (4, "image")


def test_face_outside_its_image(dataset) -> None:
    """Outside = the landmark box misses the image entirely; a face cut by the border is legal."""
    root, train, _ = dataset
    path = wflw.annotation_path(root, "train")
    cut = Spec(train[1].image, train[1].landmarks - [30.0, 0.0], train[1].box, train[1].flags)
    assert (cut.landmarks[:, 0] < 0).any() and (cut.landmarks[:, 0] >= 0).any()
    replace_line(path, 2, lambda _: full_line(cut))
    assert len(wflw.load_split(root, "train")) == 4
    gone = Spec(train[1].image, train[1].landmarks + [0.0, IMAGE_H + 5.0], train[1].box, train[1].flags)
    replace_line(path, 2, lambda _: full_line(gone))
    with pytest.raises(wflw.WFLWFormatError, match="face outside its image") as info:
        wflw.load_split(root, "train")
    assert (info.value.line, info.value.field) == (2, "landmarks")


def test_subset_line_not_in_test_list(dataset) -> None:
    root, _, _ = dataset
    faces = wflw.load_split(root, "test")
    path = wflw.subset_path(root, "blur")
    replace_line(path, 1, set_token(0, "1.5"))  # moved x0 by far more than the tolerance
    with pytest.raises(wflw.WFLWFormatError, match="no test face") as info:
        wflw.load_subsets(root, faces)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 1, "landmarks")

    replace_line(path, 1, set_token(-1, "9--Nowhere/9_z.jpg"))
    with pytest.raises(wflw.WFLWFormatError, match="no face in the test annotation file") as info:
        wflw.load_subsets(root, faces)
    assert (info.value.line, info.value.field) == (1, "image")


def test_subset_matching_tolerance(dataset) -> None:
    root, _, test = dataset
    faces = wflw.load_split(root, "test")
    path = wflw.subset_path(root, "pose")
    first = next(i for i, spec in enumerate(test) if spec.flags["pose"])
    replace_line(path, 1, set_token(5, repr(float(test[first].landmarks[2, 1]) + 5e-4)))
    assert first in wflw.load_subsets(root, faces)["pose"]


def test_subset_duplicate_line(dataset) -> None:
    root, _, _ = dataset
    faces = wflw.load_split(root, "test")
    path = wflw.subset_path(root, "makeup")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(wflw.WFLWFormatError, match="duplicate") as info:
        wflw.load_subsets(root, faces)
    assert (info.value.line, info.value.field) == (len(lines) + 1, "landmarks")


def test_subset_wrong_field_count(dataset) -> None:
    root, _, test = dataset
    faces = wflw.load_split(root, "test")
    path = wflw.subset_path(root, "illumination")
    replace_line(path, 1, lambda _: full_line(test[0]))  # the long 207-field form where 197 belong
    with pytest.raises(wflw.WFLWFormatError, match="expected 197") as info:
        wflw.load_subsets(root, faces)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 1, "count")


def test_flag_without_subset_line(dataset) -> None:
    root, _, test = dataset
    faces = wflw.load_split(root, "test")
    name = "expression"
    path = wflw.subset_path(root, name)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")  # drop the first flagged face
    first = next(i for i, spec in enumerate(test) if spec.flags[name])
    with pytest.raises(wflw.WFLWFormatError, match="flag is 1 but") as info:
        wflw.load_subsets(root, faces)
    err = info.value
    assert (err.path, err.line, err.field) == (str(wflw.annotation_path(root, "test")), first + 1, name)


def test_subset_line_without_flag(dataset) -> None:
    root, _, test = dataset
    name = "occlusion"
    unflagged = next(i for i, spec in enumerate(test) if not spec.flags[name])
    path = wflw.subset_path(root, name)
    path.write_text(path.read_text() + short_line(test[unflagged]) + "\n")
    n_lines = len(path.read_text().splitlines())
    with pytest.raises(wflw.WFLWFormatError, match="flag is 0") as info:
        wflw.load_subsets(root, wflw.load_split(root, "test"))
    assert (info.value.path, info.value.line, info.value.field) == (str(path), n_lines, name)


# ---------------------------------------------------------------- whole-root check


def test_check_dataset_clean_statistics(dataset) -> None:
    root, train, test = dataset
    stats, errors = wflw.check_dataset(root, progress=False)
    assert errors == []
    assert stats["images"] == 6 and stats["faces"] == 10
    assert stats["splits"]["train"]["faces"] == 4 and stats["splits"]["train"]["images"] == 3
    assert stats["splits"]["test"]["faces"] == 6 and stats["splits"]["test"]["images"] == 3
    for split, specs in (("train", train), ("test", test)):
        for name in wflw.ATTRIBUTES:
            assert stats["splits"][split]["attributes"][name] == sum(s.flags[name] for s in specs)
    assert stats["subsets"] == {name: sum(s.flags[name] for s in test) for name in wflw.ATTRIBUTES}
    assert stats["test_list"] == 6


def test_check_dataset_collects_every_error(dataset) -> None:
    root, _, test = dataset
    train_path, test_path = wflw.annotation_path(root, "train"), wflw.annotation_path(root, "test")
    replace_line(train_path, 1, set_token(3, "x"))  # non-number
    replace_line(train_path, 2, set_token(N + 9, "-1"))  # blur flag
    (root / wflw.IMAGE_DIR / "4--More/4_f.jpg").write_bytes(b"")  # test faces on lines 5 and 6
    subset = wflw.subset_path(root, "pose")
    replace_line(subset, 1, set_token(0, "0.0"))  # subset line not in test list
    test_list = wflw.test_list_path(root)
    test_list.write_text("\n".join(test_list.read_text().splitlines()[:-1]) + "\n")  # last test face missing
    wflw.subset_path(root, "blur").unlink()

    stats, errors = wflw.check_dataset(root, progress=False)
    found = {(e.path, e.line, e.field) for e in errors}
    first_pose = next(i for i, spec in enumerate(test) if spec.flags["pose"])
    expected = {
        (str(train_path), 1, "y1"),
        (str(train_path), 2, "blur"),
        (str(test_path), 5, "image"),
        (str(test_path), 6, "image"),
        (str(subset), 1, "landmarks"),
        (str(test_path), first_pose + 1, "pose"),  # its subset line no longer matches
        (str(test_path), 6, "image"),
        (str(wflw.subset_path(root, "blur")), None, None),
    }
    assert expected <= found
    assert any("missing from list_98pt_test.txt" in e.message for e in errors)
    assert len(errors) == len(found) + 1  # line 6 of test has two distinct image errors, nothing else twice
    assert stats["splits"]["train"]["faces"] == 2  # the two broken lines give no face


def test_list_lines_of_an_invalid_test_line_say_they_follow_from_it(dataset) -> None:
    root, _, test = dataset
    test_path = wflw.annotation_path(root, "test")
    replace_line(test_path, 1, set_token(N + 4, "7"))  # bad pose flag; 3_d.jpg keeps two valid faces
    replace_line(test_path, 4, lambda text: text.split(" ", 1)[1])  # 206 fields; 3_e.jpg's only face
    blur = wflw.subset_path(root, "blur")
    last_blur = len(blur.read_text().splitlines())  # a face of 4_f.jpg, whose lines are valid
    replace_line(blur, last_blur, set_token(0, "0.0"))

    _, errors = wflw.check_dataset(root, progress=False)
    own = [(e.line, e.field) for e in errors if e.path == str(test_path)]
    assert own == [(1, "pose"), (4, "count"), (5, "blur")]  # line 5: its blur subset line was changed
    knock_on = [e for e in errors if e.path != str(test_path) and (e.path, e.line) != (str(blur), last_blur)]
    # each list line of the two broken faces: the test list and the subsets of their flags
    expected = {
        (str(wflw.test_list_path(root)), 1, "landmarks"),
        (str(wflw.test_list_path(root)), 4, "image"),
    }
    for name in wflw.ATTRIBUTES:
        listed = [i for i, spec in enumerate(test) if spec.flags[name]]
        expected |= {
            (str(wflw.subset_path(root, name)), listed.index(i) + 1, "image" if i == 3 else "landmarks")
            for i in (0, 3)
            if i in listed
        }
    assert len(expected) == 6  # test list, pose and makeup lines of faces 0 and 3
    assert {(e.path, e.line, e.field) for e in knock_on} == expected and len(knock_on) == len(expected)
    for e in knock_on:
        assert f"follows from the error at {test_path}:{1 if '3_d' in e.message else 4}" in e.message
    # an unrelated wrong subset line keeps its own message
    (unrelated,) = [e for e in errors if (e.path, e.line) == (str(blur), last_blur)]
    assert "no test face of '4--More/4_f.jpg' has these landmarks" in unrelated.message
    assert len(errors) == len(own) + len(expected) + 1


def test_check_dataset_reports_degenerate_faces(dataset) -> None:
    root, _, _ = dataset
    path = wflw.annotation_path(root, "train")
    replace_line(path, 2, same_eye_corners)
    replace_line(path, 4, all_landmarks_at)
    stats, errors = wflw.check_dataset(root, progress=False)
    assert [(e.path, e.line, e.field) for e in errors] == [
        (str(path), 2, "landmarks"),
        (str(path), 4, "landmarks"),
    ]
    assert stats["splits"]["train"]["faces"] == 2


@pytest.mark.parametrize("name", ["train", "test", "test_list"])
def test_check_dataset_reports_empty_files(dataset, name: str) -> None:
    root, _, _ = dataset
    path = wflw.test_list_path(root) if name == "test_list" else wflw.annotation_path(root, name)
    path.write_bytes(b"")
    _, errors = wflw.check_dataset(root, progress=False)
    assert (str(path), None, None) in {(e.path, e.line, e.field) for e in errors}
    assert any(e.path == str(path) and "empty" in e.message for e in errors)
    if name == "test_list":
        assert len(errors) == 1  # not one "missing from the list" error per test face as well
    else:
        with pytest.raises(wflw.WFLWFormatError, match="empty"):
            wflw.load_split(root, name)


def test_empty_subset_file_is_legal(dataset) -> None:
    root, train, test = dataset
    for spec in test:
        spec.flags["makeup"] = 0
    write_root(root, train, test)
    assert wflw.subset_path(root, "makeup").stat().st_size == 0
    assert wflw.check_dataset(root, progress=False)[1] == []


def test_check_dataset_of_missing_root(tmp_path: Path) -> None:
    stats, errors = wflw.check_dataset(tmp_path / "nope", progress=False)
    assert stats == {} and len(errors) == 1 and "not a directory" in errors[0].message


def test_cli_check_clean_and_broken(dataset, capsys) -> None:
    root, _, _ = dataset
    assert cli.main(["check", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no errors" in out
    assert any(line.split()[:3] == ["test", "6", "3"] for line in out.splitlines())

    path = wflw.annotation_path(root, "test")
    replace_line(path, 2, set_token(N + 3, "NaN"))
    (root / wflw.IMAGE_DIR / "1--Event/1_a.jpg").unlink()
    assert cli.main(["check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: field y_max: not a finite number" in out
    assert f"{wflw.annotation_path(root, 'train')}:1: field image: image not found" in out
    assert f"{wflw.annotation_path(root, 'train')}:2: field image: image not found" in out


def test_cli_via_module_dispatch(dataset) -> None:
    import subprocess
    import sys

    root, _, _ = dataset
    wflw.annotation_path(root, "train").write_text("1 2 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hrnet_lib", "data", "check", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"{wflw.annotation_path(root, 'train')}:1: field count: expected 207" in proc.stdout
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- mmpose json


def write_json(path: Path, annotations: list[dict]) -> Path:
    data = {
        "categories": [{"id": 1, "name": "face"}],
        "images": [{"id": 7, "file_name": "a.jpg", "height": 60, "width": 80}],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


def json_annotation(rng: np.random.Generator, **extra) -> dict:
    keypoints = np.concatenate([rng.uniform(0, 50, (98, 2)), np.ones((98, 1))], axis=1)
    return {
        "image_id": 7,
        "keypoints": keypoints.ravel().tolist(),
        "bbox": [10.0, 20.0, 30.0, 40.0],
        "center": [25.5, 40.0],
        "scale": 0.25,
        **extra,
    }


def test_read_mmpose_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    anns = [json_annotation(rng), json_annotation(rng, blur=1, pose=0)]
    faces = wflw.read_mmpose_json(write_json(tmp_path / "w.json", anns))
    assert len(faces) == 2
    for face, ann in zip(faces, anns, strict=True):
        np.testing.assert_array_equal(face.landmarks, np.reshape(ann["keypoints"], (98, 3))[:, :2])
        np.testing.assert_array_equal(face.box, [10.0, 20.0, 40.0, 60.0])
        np.testing.assert_array_equal(face.center, [25.5, 40.0])
        np.testing.assert_array_equal(face.scale, [50.0, 50.0])
        assert face.image == "a.jpg"
    assert not any(faces[0].attributes.values())
    assert faces[1].attributes == {name: name == "blur" for name in wflw.ATTRIBUTES}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keypoints": [1.0] * (3 * 97)}, "annotations[0].keypoints"),
        ({"center": [1.0, float("nan")]}, "annotations[0].center"),
        ({"scale": "big"}, "annotations[0].scale"),
        ({"scale": 0}, "annotations[0].scale"),
        ({"scale": -0.25}, "annotations[0].scale"),
        ({"scale": [0.25, 0.0]}, "annotations[0].scale"),
        ({"scale": float("inf")}, "annotations[0].scale"),
        ({"keypoints": [5.0, 5.0, 1.0] * 98}, "annotations[0].keypoints"),
        ({"image_id": 99}, "annotations[0].image_id"),
        ({"occlusion": 3}, "annotations[0].occlusion"),
    ],
)
def test_read_mmpose_json_errors(tmp_path: Path, change: dict, field: str) -> None:
    path = write_json(tmp_path / "w.json", [json_annotation(np.random.default_rng(0), **change)])
    with pytest.raises(wflw.WFLWFormatError) as info:
        wflw.read_mmpose_json(path)
    assert (info.value.path, info.value.field) == (str(path), field)


def test_read_mmpose_json_eye_corners_coincide(tmp_path: Path) -> None:
    keypoints = np.reshape(json_annotation(np.random.default_rng(0))["keypoints"], (98, 3))
    keypoints[72] = keypoints[60]
    ann = json_annotation(np.random.default_rng(0), keypoints=keypoints.ravel().tolist())
    path = write_json(tmp_path / "w.json", [ann])
    with pytest.raises(wflw.WFLWFormatError, match="inter-ocular") as info:
        wflw.read_mmpose_json(path)
    assert info.value.field == "annotations[0].keypoints"


def test_read_mmpose_json_duplicate_image_id(tmp_path: Path) -> None:
    path = write_json(tmp_path / "w.json", [json_annotation(np.random.default_rng(0))])
    data = json.loads(path.read_text())
    data["images"].append({"id": 7, "file_name": "b.jpg", "height": 60, "width": 80})
    path.write_text(json.dumps(data))
    with pytest.raises(wflw.WFLWFormatError, match="duplicate image id 7") as info:
        wflw.read_mmpose_json(path)
    assert (info.value.path, info.value.field) == (str(path), "images[1].id")


# ---------------------------------------------------------------- the real fixture


def test_fixture_checks_clean() -> None:
    stats, errors = wflw.check_dataset(FIXTURE, progress=False)
    assert errors == []
    assert stats["splits"]["test"]["faces"] == 4 and stats["splits"]["train"]["faces"] == 2
    assert stats["images"] == 2 and stats["test_list"] == 4
    faces = wflw.load_split(FIXTURE, "test")
    assert len({face.image for face in faces}) == 2
    assert all(len(v) == 0 for v in wflw.load_subsets(FIXTURE, faces).values())


def test_fixture_json_agrees_with_txt() -> None:
    txt = wflw.load_split(FIXTURE, "test")
    js = wflw.read_mmpose_json(FIXTURE / "mmpose_json" / "face_landmarks_wflw_test.json")
    # the json names images without their event directory; match by file name, then by order
    assert [Path(f.image).name for f in txt] == [f.image for f in js]
    for a, b in zip(txt, js, strict=True):
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-9)
        # FACTS: centre = landmark-box centre to half a pixel; side = larger side rounded up, at times +1
        low, high = a.landmarks.min(0), a.landmarks.max(0)
        assert np.all(np.abs(b.center - (low + high) / 2) <= 0.5)
        assert np.all(b.center * 2 == np.round(b.center * 2))
        side = (high - low).max()
        assert b.scale[0] == b.scale[1]
        assert np.ceil(side) <= round(b.scale[0], 6) <= np.ceil(side) + 1


def test_field_names_name_every_field_of_both_line_forms() -> None:
    long, short = wflw.field_names(), wflw.field_names(short=True)
    assert len(long) == 207 and len(short) == 197
    assert long[:4] == ["x0", "y0", "x1", "y1"] and long[194:196] == ["x97", "y97"]
    assert long[196:200] == ["x_min", "y_min", "x_max", "y_max"]
    assert long[200:206] == ["pose", "expression", "illumination", "makeup", "occlusion", "blur"]
    assert long[-1] == short[-1] == "image" and short[:196] == long[:196]


def test_parse_line_reads_the_real_first_line_and_names_a_bad_field() -> None:
    path = wflw.annotation_path(FIXTURE, "test")
    line = path.read_text().splitlines()[0]
    tokens = line.split()
    face, problems = wflw.parse_line(line, path, 1)
    assert problems == [] and face.image == tokens[-1]
    np.testing.assert_array_equal(face.landmarks[97], [float(tokens[194]), float(tokens[195])])
    np.testing.assert_array_equal(face.box, [float(v) for v in tokens[196:200]])
    tokens[3] = "3O4.1"
    face, problems = wflw.parse_line(" ".join(tokens), path, 7)
    assert face is None and [str(p) for p in problems] == [f"{path}:7: field y1: not a number: '3O4.1'"]


def test_one_face_per_image_keeps_the_first_face_of_each_image_in_order() -> None:
    faces = wflw.load_split(FIXTURE, "test")  # two images, two faces each
    chosen = wflw.one_face_per_image(faces, 4)
    assert [f.image for f in chosen] == list(dict.fromkeys(f.image for f in faces))
    assert all(f is next(g for g in faces if g.image == f.image) for f in chosen)
    assert wflw.one_face_per_image(faces, 1) == chosen[:1]
