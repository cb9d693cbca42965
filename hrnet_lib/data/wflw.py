"""Read and validate WFLW exactly as it is released (LAB, CVPR 2018), plus mmpose's json form.

Layout under a dataset root:

    WFLW_images/<event>/<name>.jpg
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt
        207 fields a line: 196 coordinates x0 y0 ... x97 y97, the rectangle x_min y_min x_max y_max,
        six 0/1 flags (pose expression illumination make-up occlusion blur), the image path.
    WFLW_annotations/list_98pt_test/list_98pt_test.txt and list_98pt_test_<subset>.txt
        197 fields a line: 196 coordinates, the image path (no rectangle, no flags).

Every problem is reported as a `WFLWFormatError` naming the file, the 1-based line and the field, so a
broken copy can be fixed by hand. `read_annotations` stops at the first problem; `check_dataset` collects
all of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

NUM_KEYPOINTS = 98
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")  # file flag order
SUBSET_FILES = {
    "pose": "list_98pt_test_largepose.txt",
    "expression": "list_98pt_test_expression.txt",
    "illumination": "list_98pt_test_illumination.txt",
    "makeup": "list_98pt_test_makeup.txt",
    "occlusion": "list_98pt_test_occlusion.txt",
    "blur": "list_98pt_test_blur.txt",
}
ANNOTATION_DIR = "WFLW_annotations"
IMAGE_DIR = "WFLW_images"
SPLIT_DIR = "list_98pt_rect_attr_train_test"
SUBSET_DIR = "list_98pt_test"
TEST_LIST_FILE = "list_98pt_test.txt"
SPLITS = ("train", "test")
BOX_FIELDS = ("x_min", "y_min", "x_max", "y_max")
ANNOTATION_FIELDS = 2 * NUM_KEYPOINTS + len(BOX_FIELDS) + len(ATTRIBUTES) + 1  # 207
SUBSET_FIELDS = 2 * NUM_KEYPOINTS + 1  # 197
MATCH_TOLERANCE = 1e-3  # pixels; a subset line matches a test face when every coordinate agrees this closely
JSON_SCALE_UNIT = 200.0  # mmpose/HRNet json: crop side in pixels before padding = 200 * scale


@dataclass(frozen=True, eq=False)
class Face:
    """One annotated face. Compared by identity (arrays make field-wise equality ambiguous)."""

    image: str  # path relative to WFLW_images/, as in the file
    landmarks: np.ndarray  # (98, 2) float64, image pixels
    box: np.ndarray  # (4,) float64 x_min y_min x_max y_max: the released detection rectangle
    attributes: dict[str, bool] = field(default_factory=dict)
    source: str = ""  # "path/to/file.txt:LINE" where it came from
    center: np.ndarray | None = None  # (2,) only when read from mmpose json: the official crop centre
    scale: np.ndarray | None = None  # (2,) crop side in pixels before the 1.25 padding, json only


class WFLWFormatError(ValueError):
    """A problem in a WFLW file; str() is "FILE:LINE: field FIELD: message"."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = "" if self.field is None else f" field {self.field}:"
        return f"{where}:{what} {self.message}"


def annotation_path(root: str | Path, split: str) -> Path:
    """The official annotation file of `split` ("train" or "test") under a dataset root."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(root) / ANNOTATION_DIR / SPLIT_DIR / f"list_98pt_rect_attr_{split}.txt"


def subset_path(root: str | Path, attribute: str) -> Path:
    """The official test-subset list of one attribute (e.g. "pose" -> list_98pt_test_largepose.txt)."""
    return Path(root) / ANNOTATION_DIR / SUBSET_DIR / SUBSET_FILES[attribute]


def test_list_path(root: str | Path) -> Path:
    """list_98pt_test.txt: all test faces in the short (197-field) form."""
    return Path(root) / ANNOTATION_DIR / SUBSET_DIR / TEST_LIST_FILE


def _coordinate_name(index: int) -> str:
    return f"{'xy'[index % 2]}{index // 2}"


def field_names(short: bool = False) -> list[str]:
    """Names of the fields of a 207-field line, or of a 197-field line when `short`, in file order:
    x0 y0 ... x97 y97, then x_min y_min x_max y_max and the six flags (long form only), then image."""
    names = [_coordinate_name(i) for i in range(2 * NUM_KEYPOINTS)]
    if not short:
        names += [*BOX_FIELDS, *ATTRIBUTES]
    return [*names, "image"]


def _read_lines(path: Path) -> list[tuple[int, bytes]]:
    """Numbered non-trailing lines of a file, undecoded, so an encoding error can name its line.

    Lines end at "\n" only (a "\r" before it is dropped); blank lines at the very end carry nothing
    and are dropped; a blank line before the last record is kept so the parser reports it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WFLWFormatError(path, None, None, "file not found") from None
    except OSError as err:
        raise WFLWFormatError(path, None, None, f"cannot read file: {err}") from None
    lines = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return list(enumerate(lines, start=1))


def _decode_line(raw: bytes, path: Path, line: int, short: bool) -> str:
    """A line as UTF-8 text; a WFLWFormatError naming the field that holds the first undecodable byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        index = len(raw[: err.start + 1].split()) - 1  # the token holding the bad byte
        names = field_names(short)
        name = names[index] if index < len(names) else "count"
        message = f"not UTF-8 text: byte 0x{raw[err.start]:02x} at column {err.start + 1}"
        raise WFLWFormatError(path, line, name, message) from None


def _landmark_problem(landmarks: np.ndarray) -> str | None:
    """Why a (98, 2) landmark set cannot be used (no crop or no NME from it), or None if it can."""
    if np.ptp(landmarks, axis=0).max() == 0:
        return "all landmarks coincide (zero extent: no crop box)"
    if np.array_equal(landmarks[60], landmarks[72]):
        return "points 60 and 72 (outer eye corners) coincide: zero inter-ocular distance, NME undefined"
    return None


def _parse_numbers(
    tokens: list[str], names: Iterable[str], path: Path, line: int, errors: list[WFLWFormatError]
) -> np.ndarray:
    values = np.zeros(len(tokens), dtype=np.float64)
    for i, (token, name) in enumerate(zip(tokens, names, strict=True)):
        try:
            value = float(token)
        except ValueError:
            errors.append(WFLWFormatError(path, line, name, f"not a number: {token!r}"))
            continue
        if not math.isfinite(value):
            errors.append(WFLWFormatError(path, line, name, f"not a finite number: {token!r}"))
            continue
        values[i] = value
    return values


def _parse_image_path(token: str, path: Path, line: int, errors: list[WFLWFormatError]) -> None:
    parts = PurePosixPath(token).parts
    if "\\" in token or token.startswith("/") or ".." in parts:
        errors.append(
            WFLWFormatError(path, line, "image", f"image path must be relative to {IMAGE_DIR}/: {token!r}")
        )


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_line(
    text: str, path: Path, line: int, short: bool = False
) -> tuple[Face | None, list[WFLWFormatError]]:
    """Parse one annotation line (207 fields, or 197 when `short`) of file `path`; return the face (None
    if broken) and all its errors, each naming the file, the line and the field."""
    tokens = text.split()
    expected = SUBSET_FIELDS if short else ANNOTATION_FIELDS
    if len(tokens) != expected:
        message = f"expected {expected} space-separated fields, found {len(tokens)}"
        numbers = all(map(_is_number, tokens[: expected - 1]))
        if len(tokens) > expected and numbers and not _is_number(tokens[expected - 1]):
            image = " ".join(tokens[expected - 1 :])  # the fields after the numbers: one path, split?
            message += (
                f": the image path reads {image!r} across {len(tokens) - expected + 1} fields, but the "
                "fields are split at spaces, so a path cannot hold one; rename the image without spaces"
            )
        return None, [WFLWFormatError(path, line, "count", message)]
    errors: list[WFLWFormatError] = []
    n = 2 * NUM_KEYPOINTS
    coords = _parse_numbers(tokens[:n], map(_coordinate_name, range(n)), path, line, errors)
    box = np.zeros(4)
    attributes = dict.fromkeys(ATTRIBUTES, False)
    if not short:
        box = _parse_numbers(tokens[n : n + 4], BOX_FIELDS, path, line, errors)
        for name, token in zip(ATTRIBUTES, tokens[n + 4 : n + 10], strict=True):
            if token not in ("0", "1"):
                errors.append(WFLWFormatError(path, line, name, f"flag must be 0 or 1, got {token!r}"))
            attributes[name] = token == "1"
    landmarks = coords.reshape(NUM_KEYPOINTS, 2)
    problem = None if errors else _landmark_problem(landmarks)
    if problem is not None:
        errors.append(WFLWFormatError(path, line, "landmarks", problem))
    image = tokens[-1]
    _parse_image_path(image, path, line, errors)
    if errors:
        return None, errors
    face = Face(image, landmarks, box, attributes, source=f"{path}:{line}")
    return face, []


def _parse_file(
    path: Path, short: bool = False, allow_empty: bool = False
) -> tuple[list[Face], list[WFLWFormatError]]:
    """All faces that parse, and all errors, of one annotation (or short-form list) file. A file that
    cannot be read, or that holds no line unless `allow_empty`, gives one error with line None."""
    try:
        lines = _read_lines(path)
    except WFLWFormatError as err:
        return [], [err]
    if not lines and not allow_empty:
        return [], [WFLWFormatError(path, None, None, "file is empty: no faces")]
    faces: list[Face] = []
    errors: list[WFLWFormatError] = []
    for line, raw in lines:
        try:
            text = _decode_line(raw, path, line, short)
        except WFLWFormatError as err:
            errors.append(err)
            continue
        face, line_errors = parse_line(text, path, line, short)
        errors += line_errors
        if face is not None:
            faces.append(face)
    return faces, errors


def one_face_per_image(faces: list[Face], count: int) -> list[Face]:
    """The first face of each image, in file order, up to `count` faces (a figure of distinct photos)."""
    first: dict[str, Face] = {}
    for face in faces:
        first.setdefault(face.image, face)
    return list(first.values())[:count]


def _face_line(face: Face) -> tuple[str, int | None]:
    path, _, line = face.source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (face.source, None)


def probe_image(path: Path) -> tuple[int, int] | str:
    """(width, height) of an image file, or the reason it cannot be used (missing, damaged, truncated).

    Size comes from the JPEG header (PIL), with EXIF rotation applied as cv2.imread applies it; the
    pixels are decoded at 1/8 scale (JPEG DCT scaling) to prove the file is complete and readable
    without paying for a full decode (cv2 silently fills a truncated JPEG's missing rows with grey).
    """
    if not path.is_file():
        return f"image not found: {path}"
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation with a 90 degree turn
                width, height = height, width
            im.draft("L", (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Exception as err:  # PIL raises many types for broken files; all mean "unreadable"
        return f"image unreadable: {path}: {err}"
    return width, height


class ImageChecker:
    """Checks that images exist and decode (`probe_image`), each image once, and that faces lie on their
    image.

    Face-outside rule: a face is an error only when its landmark box lies entirely outside the image
    rectangle [0, width] x [0, height]. Landmarks of faces cut by the photo border are annotated
    (estimated) beyond the border, so single points outside the image are legal.
    """

    def __init__(self, image_root: str | Path) -> None:
        self.image_root = Path(image_root)
        self._sizes: dict[str, tuple[int, int] | str] = {}

    def size(self, image: str) -> tuple[int, int] | str:
        """(width, height) of an image, or the reason it cannot be used."""
        if image not in self._sizes:
            self._sizes[image] = probe_image(self.image_root / image)
        return self._sizes[image]

    def check(self, faces: list[Face], progress: bool | None = None) -> list[WFLWFormatError]:
        """Errors for faces whose image is missing/unreadable or that lie outside their image."""
        images = sorted({face.image for face in faces} - set(self._sizes))
        for image in tqdm(images, desc="checking images", unit="img", disable=_tqdm_disable(progress)):
            self.size(image)
        errors = []
        for face in faces:
            path, line = _face_line(face)
            size = self.size(face.image)
            if isinstance(size, str):
                errors.append(WFLWFormatError(path, line, "image", size))
                continue
            width, height = size
            low, high = face.landmarks.min(axis=0), face.landmarks.max(axis=0)
            if high[0] < 0 or high[1] < 0 or low[0] > width or low[1] > height:
                message = (
                    f"face outside its image: landmark box ({low[0]:.1f}, {low[1]:.1f})-"
                    f"({high[0]:.1f}, {high[1]:.1f}) does not meet the {width}x{height} image"
                )
                errors.append(WFLWFormatError(path, line, "landmarks", message))
        return errors


def _tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None shows the bar only on a terminal."""
    return None if progress is None else not progress


def read_annotations(
    path: str | Path, image_root: str | Path | None = None, progress: bool | None = None
) -> list[Face]:
    """Read an official 207-field annotation file; raise WFLWFormatError on the first bad line.

    With `image_root` (the WFLW_images directory) also check that every image exists and decodes and
    that every face lies on its image.
    """
    faces, errors = _parse_file(Path(path))
    if not errors and image_root is not None:
        errors = ImageChecker(image_root).check(faces, progress)
    if errors:
        raise errors[0]
    return faces


def load_split(root: str | Path, split: str, check_images: bool = True) -> list[Face]:
    """Faces of the "train" or "test" split of a dataset root, optionally with image checks."""
    image_root = Path(root) / IMAGE_DIR if check_images else None
    return read_annotations(annotation_path(root, split), image_root)


def _invalid_lines(path: Path, errors: list[WFLWFormatError]) -> dict[str, str]:
    """Image path (a line's last field) -> "FILE:LINE, ..." of the lines of `path` that have errors, so a
    list line left without a face by an invalid annotation line can say that it follows from it."""
    bad = {e.line for e in errors if e.line is not None and Path(e.path) == path}
    lines: dict[str, list[str]] = {}
    for line, raw in _read_lines(path) if bad else []:
        if line in bad and raw.split():
            lines.setdefault(raw.split()[-1].decode("utf-8", "replace"), []).append(f"{path}:{line}")
    return {image: ", ".join(refs) for image, refs in lines.items()}


def _match_list(
    path: Path, test_faces: list[Face], allow_empty: bool, invalid: Mapping[str, str] | None = None
) -> tuple[list[int], list[int], list[WFLWFormatError]]:
    """Match each line of a short-form list file to a distinct test face by image path and coordinates.

    Returns (indices into test_faces in file order, the line numbers they came from, errors); a file
    that cannot be read, or is empty unless `allow_empty`, gives a single error with line None. A line
    that matches no face of an image in `invalid` (see `_invalid_lines`) says it follows from those lines.
    """
    invalid = invalid or {}
    by_image: dict[str, list[int]] = {}
    for i, face in enumerate(test_faces):
        by_image.setdefault(face.image, []).append(i)
    entries, errors = _parse_file(path, short=True, allow_empty=allow_empty)
    indices: list[int] = []
    lines: list[int] = []
    taken: dict[int, int] = {}
    for entry in entries:
        _, line = _face_line(entry)
        candidates = by_image.get(entry.image)
        cause = invalid.get(entry.image)
        if not candidates:
            message = f"image {entry.image!r} has no face in the test annotation file"
            if cause:
                message = f"image {entry.image!r} has no valid test face: follows from the error at {cause}"
            errors.append(WFLWFormatError(path, line, "image", message))
            continue
        close = [
            i
            for i in candidates
            if np.abs(test_faces[i].landmarks - entry.landmarks).max() <= MATCH_TOLERANCE
        ]
        free = [i for i in close if i not in taken]
        if not close:
            message = f"no test face of {entry.image!r} has these landmarks (tolerance {MATCH_TOLERANCE} px)"
            if cause:
                message = (
                    f"no valid test face of {entry.image!r} has these landmarks: follows from the error "
                    f"at {cause}"
                )
            errors.append(WFLWFormatError(path, line, "landmarks", message))
        elif not free:
            message = f"duplicate: the same test face is already listed on line {taken[close[0]]}"
            errors.append(WFLWFormatError(path, line, "landmarks", message))
        else:
            taken[free[0]] = line
            indices.append(free[0])
            lines.append(line)
    return indices, lines, errors


def _subsets(
    root: Path, test_faces: list[Face], invalid: Mapping[str, str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, int], list[WFLWFormatError]]:
    """Subset indices per attribute, the number of lines per subset file, and all errors (`invalid`: as in
    `_match_list`)."""
    subsets: dict[str, np.ndarray] = {}
    line_counts: dict[str, int] = {}
    errors: list[WFLWFormatError] = []
    for name in ATTRIBUTES:
        path = subset_path(root, name)
        indices, lines, list_errors = _match_list(path, test_faces, allow_empty=True, invalid=invalid)
        errors += list_errors
        unreadable = any(e.line is None for e in list_errors)
        line_counts[name] = 0 if unreadable else _count_records(path)
        for i, line in zip(indices, lines, strict=True):
            if not test_faces[i].attributes[name]:
                where = test_faces[i].source
                message = f"face is in {SUBSET_FILES[name]} but its {name} flag is 0 ({where})"
                errors.append(WFLWFormatError(path, line, name, message))
        listed = set(indices)
        for i, face in enumerate(test_faces):
            if face.attributes[name] and i not in listed and not unreadable:
                face_path, face_line = _face_line(face)
                message = f"{name} flag is 1 but the face is not in {SUBSET_FILES[name]}"
                errors.append(WFLWFormatError(face_path, face_line, name, message))
        subsets[name] = np.array(sorted(indices), dtype=np.int64)
    return subsets, line_counts, errors


def _count_records(path: Path) -> int:
    try:
        return len(_read_lines(path))
    except WFLWFormatError:
        return 0


def load_subsets(root: str | Path, test_faces: list[Face]) -> dict[str, np.ndarray]:
    """Attribute name -> sorted int64 indices into `test_faces` of that test subset.

    Each subset line is matched to a test face by image path and coordinates and checked against the
    flags in both directions; the first problem is raised as WFLWFormatError.
    """
    subsets, _, errors = _subsets(Path(root), test_faces)
    if errors:
        raise errors[0]
    return subsets


def check_dataset(root: str | Path, progress: bool | None = None) -> tuple[dict, list[WFLWFormatError]]:
    """Validate a whole dataset root; return (statistics, every error found). Nothing is skipped.

    Statistics: "images" and "faces" (both splits), "splits" -> split -> {"faces", "images",
    "attributes": flag counts}, "subsets" -> attribute -> lines in its subset file, "test_list" -> lines
    in list_98pt_test.txt.
    """
    root = Path(root)
    errors: list[WFLWFormatError] = []
    if not root.is_dir():
        return {}, [WFLWFormatError(root, None, None, "dataset root is not a directory")]
    checker = ImageChecker(root / IMAGE_DIR)
    splits: dict[str, list[Face]] = {}
    for split in SPLITS:
        faces, split_errors = _parse_file(annotation_path(root, split))
        splits[split] = faces
        errors += split_errors
    invalid = _invalid_lines(annotation_path(root, "test"), errors)  # before the image errors are added
    errors += checker.check(splits["train"] + splits["test"], progress)

    test_faces = splits["test"]
    test_list, _, list_errors = _match_list(
        test_list_path(root), test_faces, allow_empty=False, invalid=invalid
    )
    errors += list_errors
    if not any(e.line is None for e in list_errors):
        listed = set(test_list)
        for i, face in enumerate(test_faces):
            if i not in listed:
                path, line = _face_line(face)
                errors.append(
                    WFLWFormatError(path, line, "image", f"test face missing from {TEST_LIST_FILE}")
                )
    _, subset_lines, subset_errors = _subsets(root, test_faces, invalid)
    errors += subset_errors

    stats = {
        "images": len({face.image for faces in splits.values() for face in faces}),
        "faces": sum(len(faces) for faces in splits.values()),
        "splits": {
            split: {
                "faces": len(faces),
                "images": len({face.image for face in faces}),
                "attributes": {name: sum(face.attributes[name] for face in faces) for name in ATTRIBUTES},
            }
            for split, faces in splits.items()
        },
        "subsets": subset_lines,
        "test_list": _count_records(test_list_path(root)),
    }
    return stats, errors


def _json_error(path: Path, where: str, message: str) -> WFLWFormatError:
    return WFLWFormatError(path, None, where, message)


def _json_numbers(value: object, count: int, path: Path, where: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != count:
        raise _json_error(path, where, f"expected a list of {count} numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise _json_error(path, where, "expected numbers only")
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise _json_error(path, where, "not finite")
    return array


def read_mmpose_json(path: str | Path) -> list[Face]:
    """Read mmpose's COCO-style WFLW json (e.g. face_landmarks_wflw_test.json), in annotation order.

    Face.image is the image's `file_name`; landmarks come from the (x, y, v) `keypoints` triples; box
    from `bbox` (x, y, w, h); center is the json `center` and scale = 200 * json `scale` on both axes
    (the crop side in pixels before the 1.25 padding). Attribute flags are read from annotation keys
    named as in ATTRIBUTES when present, else False. Errors name the json location as the field.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WFLWFormatError(path, None, None, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WFLWFormatError(path, None, None, f"cannot read json: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise _json_error(path, "images", "expected a COCO-style object with an 'images' list")
    if not isinstance(data.get("annotations"), list):
        raise _json_error(path, "annotations", "expected an 'annotations' list")
    file_names: dict[object, str] = {}
    first_index: dict[object, int] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str) or "id" not in image:
            raise _json_error(path, f"images[{i}]", "expected an object with 'id' and 'file_name'")
        image_id = image["id"]
        if not isinstance(image_id, int | str) or isinstance(image_id, bool):
            raise _json_error(path, f"images[{i}].id", f"expected an integer or string, got {image_id!r}")
        if image_id in file_names:
            message = f"duplicate image id {image_id!r} (already used by images[{first_index[image_id]}])"
            raise _json_error(path, f"images[{i}].id", message)
        file_names[image_id] = image["file_name"]
        first_index[image_id] = i
    faces = []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise _json_error(path, where, "expected an object")
        if ann.get("image_id") not in file_names:
            raise _json_error(path, f"{where}.image_id", f"no image with id {ann.get('image_id')!r}")
        keypoints = _json_numbers(ann.get("keypoints"), 3 * NUM_KEYPOINTS, path, f"{where}.keypoints")
        x, y, w, h = _json_numbers(ann.get("bbox"), 4, path, f"{where}.bbox")
        center = _json_numbers(ann.get("center"), 2, path, f"{where}.center")
        raw_scale = ann.get("scale")
        scale_values = raw_scale if isinstance(raw_scale, list) else [raw_scale, raw_scale]
        scale = JSON_SCALE_UNIT * _json_numbers(scale_values, 2, path, f"{where}.scale")
        if np.any(scale <= 0):
            raise _json_error(path, f"{where}.scale", f"must be positive, got {raw_scale!r}")
        landmarks = keypoints.reshape(NUM_KEYPOINTS, 3)[:, :2].copy()
        problem = _landmark_problem(landmarks)
        if problem is not None:
            raise _json_error(path, f"{where}.keypoints", problem)
        attributes = {}
        for name in ATTRIBUTES:
            flag = ann.get(name, 0)
            if flag not in (0, 1):  # also accepts True/False
                raise _json_error(path, f"{where}.{name}", f"flag must be 0 or 1, got {flag!r}")
            attributes[name] = bool(flag)
        faces.append(
            Face(
                image=file_names[ann["image_id"]],
                landmarks=landmarks,
                box=np.array([x, y, x + w, y + h]),
                attributes=attributes,
                source=f"{path}:{where}",
                center=center,
                scale=scale,
            )
        )
    return faces


def data_manifest(root: Path) -> str:
    """SHA-256 over the annotation files (relative path and bytes), identifying the data a run used."""
    digest = hashlib.sha256()
    base = root / ANNOTATION_DIR
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()
