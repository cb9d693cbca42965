"""Tests for hrnet_lib.evaluate.report: the evaluate command end to end on a small dataset written in the
official layout, the crop geometry with an oracle model, the official-crop matching, and the table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from oracle import OracleHeatmaps
from torch import nn

from hrnet_lib import device
from hrnet_lib.data.wflw import ANNOTATION_DIR, ATTRIBUTES, IMAGE_DIR, SUBSET_FILES, load_split
from hrnet_lib.evaluate import report
from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.io import NoSpaceError
from hrnet_lib.model.hrnet import build_model

TEMPLATE = np.random.default_rng(7).uniform(-0.4, 0.4, size=(98, 2))  # one face shape, crop units


def subset_flags(i: int) -> dict[str, bool]:
    """Attribute flags of test face i; "makeup" stays empty to exercise an empty subset."""
    return {
        "pose": i % 2 == 0,
        "expression": i % 3 == 0,
        "illumination": i < 3,
        "makeup": False,
        "occlusion": i >= 5,
        "blur": i in (1, 4),
    }


def write_dataset(root: Path, n_train: int = 6, n_test: int = 8, seed: int = 0) -> None:
    """A small dataset in the official WFLW layout: noise images, two faces per image, every face the
    same template shape (moved and scaled), so the mean-shape baseline is exact on it."""
    rng = np.random.default_rng(seed)
    split_dir = root / ANNOTATION_DIR / "list_98pt_rect_attr_train_test"
    subset_dir = root / ANNOTATION_DIR / "list_98pt_test"
    split_dir.mkdir(parents=True)
    subset_dir.mkdir(parents=True)
    subset_lines: dict[str, list[str]] = {name: [] for name in ATTRIBUTES}
    test_lines = []
    for split, count in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(count):
            image = f"1--Event/{split}_{i // 2}.jpg"
            path = root / IMAGE_DIR / image
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), rng.integers(0, 255, size=(160, 200, 3), dtype=np.uint8))
            side = rng.uniform(30, 50)
            landmarks = rng.uniform(50, 110, size=2) + side * TEMPLATE
            flags = subset_flags(i) if split == "test" else {name: False for name in ATTRIBUTES}
            low, high = landmarks.min(0), landmarks.max(0)
            coords = " ".join(f"{v:.6f}" for v in landmarks.ravel())
            box = " ".join(f"{v:.0f}" for v in (*low, *high))
            bits = " ".join(str(int(flags[name])) for name in ATTRIBUTES)
            lines.append(f"{coords} {box} {bits} {image}")
            if split == "test":
                test_lines.append(f"{coords} {image}")
                for name in ATTRIBUTES:
                    if flags[name]:
                        subset_lines[name].append(f"{coords} {image}")
        (split_dir / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(lines) + "\n")
    (subset_dir / "list_98pt_test.txt").write_text("\n".join(test_lines) + "\n")
    for name, file in SUBSET_FILES.items():
        (subset_dir / file).write_text("".join(line + "\n" for line in subset_lines[name]))


def save_tiny_checkpoint(path: Path) -> None:
    """A randomly initialised small HRNet at 64 px input, in the project's checkpoint format."""
    torch.manual_seed(0)
    model = build_model("hrnetv2_w18_small_v2", num_keypoints=98)
    config = {"model": "hrnetv2_w18_small_v2", "num_keypoints": 98, "upsample": "bilinear"}
    config |= {"input_size": 64, "heatmap_size": 16, "sigma": 1.0}
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wflw")
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_tiny_checkpoint(path)
    return path


def test_evaluate_command_writes_results_matching_subset_files(
    dataset: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(out)]
    assert report.main([*argv, "--batch-size", "3", "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    results = json.loads(out.read_text())
    printed = capsys.readouterr().out

    # Subset sizes equal the line counts of the official subset files.
    subset_dir = dataset / ANNOTATION_DIR / "list_98pt_test"
    for name, file in SUBSET_FILES.items():
        lines = [line for line in (subset_dir / file).read_text().splitlines() if line.strip()]
        assert results["table"]["model"][name]["faces"] == len(lines), name
        assert len(results["subsets"][name]) == len(lines)
    assert results["table"]["model"]["test"]["faces"] == 8
    assert results["table"]["model"]["makeup"]["nme"] is None  # empty subset: no number, not a zero

    # Per-face NMEs agree with the saved predictions, and the subset NME is their mean.
    arrays = np.load(out.with_name("results_predictions.npz"))
    truth = np.stack([face.landmarks for face in load_split(dataset, "test")])
    np.testing.assert_allclose(arrays["landmarks"], truth)
    iod = np.linalg.norm(truth[:, 60] - truth[:, 72], axis=-1)
    expected = np.linalg.norm(arrays["predictions"] - truth, axis=-1).mean(-1) / iod
    per_face = np.array([entry["nme"] for entry in results["per_face"]])
    np.testing.assert_allclose(per_face, expected)
    assert [entry["index"] for entry in results["per_face"]] == list(range(8))
    pose = np.array(results["subsets"]["pose"])
    assert results["table"]["model"]["pose"]["nme"] == pytest.approx(100 * per_face[pose].mean())
    low, high = results["table"]["model"]["test"]["nme_ci95"]  # over these 8 faces, in percent
    assert (
        100 * per_face.min()
        <= low
        <= results["table"]["model"]["test"]["nme"]
        <= high
        <= 100 * per_face.max()
    )
    assert results["table"]["model"]["makeup"]["nme_ci95"] == [None, None]
    assert "nan" not in printed  # the printed table shows an empty subset as "-" too
    assert len(results["per_landmark_nme"]) == 98
    assert len(results["ced"]["thresholds"]) == len(results["ced"]["test"]) == 1001

    # Every face has the template shape, so the mean-shape baseline is exact here (to the 6 decimals
    # of the annotation file).
    assert results["table"]["baseline"]["test"]["nme"] == pytest.approx(0.0, abs=1e-4)  # percent

    prov = results["provenance"]
    assert prov["decoder"] == "standard" and prov["flip_test"] is True and prov["precision"] == "fp32"
    assert prov["model"]["input_size"] == 64 and len(prov["checkpoint_sha256"]) == 16
    assert prov["command"].startswith("python -m hrnet_lib evaluate --checkpoint")
    assert out.with_name("results_ced.png").stat().st_size > 1000
    header = next(line for line in printed.splitlines() if line.startswith("| WFLW-format test set |"))
    assert (
        header
        == "| WFLW-format test set | test | pose | illumination | occlusion | blur | makeup | expression |"
    )
    assert (
        "| published HRNetV2-W18 (mmpose): NME (%) | 4.06 | 6.97 | 3.99 | 4.83 | 4.58 | 3.94 | 4.33 |"
        in printed
    )


def test_evaluate_flip_and_decoder_options_each_change_the_run(dataset: Path, checkpoint: Path) -> None:
    runs = {
        (flip, decoder): report.evaluate(
            checkpoint, dataset, flip=flip, decoder=decoder, progress=False, device="cpu"
        )
        for flip, decoder in ((True, "standard"), (False, "standard"), (True, "dark"))
    }
    base = runs[True, "standard"][1]["predictions"]
    for (flip, decoder), (results, arrays) in runs.items():
        assert results["provenance"]["decoder"] == decoder and results["provenance"]["flip_test"] is flip
        if (flip, decoder) != (True, "standard"):  # one option changed at a time
            assert not np.allclose(arrays["predictions"], base), (flip, decoder)


class PrecisionProbe(OracleHeatmaps):
    """The oracle's heatmaps, recording the dtype a convolution of its input computes in and whether the
    input came channels_last."""

    def __init__(self, peaks: np.ndarray, size: int) -> None:
        super().__init__(peaks, size)
        self.conv = nn.Conv2d(3, 1, 1)
        self.seen: set[tuple[torch.dtype, bool]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add((self.conv(x).dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return super().forward(x)


@pytest.mark.parametrize(
    ("precision", "capabilities", "dtype"),
    [
        ("auto", {"avx512_f": True}, torch.float32),  # a CPU without bf16 instructions
        ("auto", {"amx_bf16": True}, torch.bfloat16),
        ("bf16", {}, torch.bfloat16),
        ("fp32", {"avx512_bf16": True}, torch.float32),
    ],
)
def test_inference_path_runs_in_the_precision_resolved(
    monkeypatch: pytest.MonkeyPatch, precision: str, capabilities: dict, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(device, "cpu_capabilities", lambda: capabilities)
    peaks = np.random.default_rng(0).integers(2, 14, size=(98, 2))
    model = PrecisionProbe(peaks, 16)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    centers, scales = np.full((3, 2), 32.0), np.full((3, 2), 64.0)  # the crop is the image: input pixels
    landmarks, _ = crops_to_landmarks(
        model, torch.device("cpu"), images, centers, scales, 64, 16, flip=False, precision=precision
    )
    assert model.seen == {(dtype, True)}
    np.testing.assert_allclose(landmarks, np.broadcast_to(4 * peaks, (3, 98, 2)), atol=1e-9)


def test_evaluate_keeps_fp32_on_a_cpu_unless_asked(
    dataset: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its table is set against published numbers: fp32 by default even where bf16 is native; --precision
    chooses, and results.json says what ran."""
    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"avx512_bf16": True})
    ran = {
        asked: report.evaluate(checkpoint, dataset, precision=asked, progress=False, device="cpu")[0]
        for asked in (None, "auto", "bf16", "fp32")
    }
    assert {asked: r["provenance"]["precision"] for asked, r in ran.items()} == {
        None: "fp32",
        "auto": "bf16",
        "bf16": "bf16",
        "fp32": "fp32",
    }
    assert (
        report.build_parser().parse_args(["--checkpoint", "c", "--data-root", "d", "--out", "o"]).precision
        is None
    )
    flag = report.build_parser().parse_args(["--checkpoint", "c", "--data-root", "d", "--out", "o", "--fp32"])
    assert flag.precision == "fp32"


def test_predictions_map_back_through_the_crop(dataset: Path) -> None:
    faces = load_split(dataset, "test")
    peaks = np.random.default_rng(0).integers(2, 14, size=(98, 2))
    model = OracleHeatmaps(peaks, 16)
    pred = report.predict_faces(
        model, faces, dataset / IMAGE_DIR, 64, 16, flip=False, batch_size=5, progress=False
    )
    for face, points in zip(faces, pred, strict=True):
        low, high = face.landmarks.min(0), face.landmarks.max(0)
        centre, side = (low + high) / 2, (high - low).max() * 1.25
        # heatmap px -> input px (x4) -> image px: centre + (input - 32) * side / 64
        np.testing.assert_allclose(points, centre + (4 * peaks - 32) * side / 64, atol=1e-6)


def test_official_crops_from_mmpose_json(wflw_mini: Path) -> None:
    faces = load_split(wflw_mini, "test")
    official = report.with_official_crops(faces, wflw_mini / "mmpose_json" / report.TEST_JSON)
    assert [f.image for f in official] == [f.image for f in faces]
    # Values of the fixture's json (centre, and side = 200 x scale before padding).
    np.testing.assert_allclose(official[0].center, [482.5, 164.5])
    np.testing.assert_allclose(official[0].scale, [85.0, 85.0])
    moved = [dataclasses.replace(faces[0], landmarks=faces[0].landmarks + 1.0)]
    with pytest.raises(ValueError, match="no face in .* with this image and these landmarks"):
        report.with_official_crops(moved, wflw_mini / "mmpose_json" / report.TEST_JSON)


def test_evaluate_real_faces_with_official_crops(wflw_mini: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "mini.json"
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(wflw_mini), "--out", str(out), "--quiet"]
    assert report.main([*argv, "--annotations", str(wflw_mini / "mmpose_json"), "--workers", "0"]) == 0
    results = json.loads(out.read_text())
    assert results["table"]["model"]["test"]["faces"] == 4
    assert all(results["table"]["model"][name]["faces"] == 0 for name in ATTRIBUTES)  # fixture has no flags
    assert "mmpose_json" in results["provenance"]["annotations"]


def test_official_crops_reach_the_model_and_the_baseline_keeps_landmark_boxes(
    dataset: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --annotations the model sees the official crops, but the mean-shape baseline still places the
    mean training shape in landmark-box crops on both splits (training faces have no official crops), so
    on template-shaped faces it stays exact even when the official crops sit elsewhere."""
    faces = load_split(dataset, "test")
    images, annotations = [], []
    for i, face in enumerate(faces):
        images.append({"id": i, "file_name": Path(face.image).name})
        low, high = face.landmarks.min(0), face.landmarks.max(0)
        annotations.append(
            {
                "image_id": i,
                "keypoints": [v for x, y in face.landmarks for v in (x, y, 2)],
                "bbox": [*low, *(high - low)],
                "center": list((low + high) / 2 + [7.0, -5.0]),  # official crops: shifted and larger
                "scale": float((high - low).max()) / 200 * 1.3,
            }
        )
    official = tmp_path / "official.json"
    official.write_text(json.dumps({"images": images, "annotations": annotations}))
    out = tmp_path / "results.json"
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(out), "--quiet"]
    assert report.main([*argv, "--annotations", str(official), "--workers", "0", "--device", "cpu"]) == 0
    results = json.loads(out.read_text())
    assert results["provenance"]["annotations"] == str(official)
    assert results["table"]["baseline"]["test"]["nme"] == pytest.approx(0.0, abs=1e-4)  # percent

    # ... while the model does see the official crops: an oracle's peaks map back through them.
    peaks = np.random.default_rng(1).integers(2, 14, size=(98, 2))
    config = {"input_size": 64, "heatmap_size": 16, "model": "oracle"}
    monkeypatch.setattr(report, "load_model", lambda path, trust: (OracleHeatmaps(peaks, 16), config))
    assert report.main([*argv, "--annotations", str(official), "--workers", "0", "--no-flip"]) == 0
    predictions = np.load(out.with_name("results_predictions.npz"))["predictions"]
    for points, annotation in zip(predictions, annotations, strict=True):
        side = 200 * annotation["scale"] * 1.25
        np.testing.assert_allclose(points, annotation["center"] + (4 * peaks - 32) * side / 64, atol=1e-6)


def test_missing_checkpoint_is_a_clear_error(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nope.pt"
    argv = ["--checkpoint", str(missing), "--data-root", str(dataset), "--out", str(tmp_path / "r.json")]
    assert report.main(argv) == 1
    assert f"weights file not found: {missing}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "--device 'gpu': use auto, cpu, cuda or cuda:N"), ("mps", "--device 'mps': use auto")]
    + ([] if torch.cuda.is_available() else [("cuda:1", "--device cuda:1: no CUDA device is available")]),
)
def test_bad_device_is_a_clear_error(
    dataset: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, device: str, message: str
) -> None:
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(tmp_path / "r.json")]
    assert report.main([*argv, "--device", device, "--quiet"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_unwritable_out_is_refused_before_evaluating(
    dataset: Path,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A results path under a file, or one that is a folder, is an error before any face is evaluated."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(report, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    for out in (blocker / "r.json", tmp_path):
        argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(out)]
        assert report.main(argv) == 1
        assert f"--out {out}: " in capsys.readouterr().err


def test_checkpoint_without_trained_head_is_refused(tmp_path: Path) -> None:
    model = build_model("hrnetv2_w18", num_keypoints=98)  # a file without config: the published model
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    path = tmp_path / "backbone.pt"
    torch.save(backbone, path)
    with pytest.raises(ValueError, match="not a trained landmark model"):
        report.load_model(path)


def test_mismatched_weights_are_a_clear_error(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = build_model("hrnetv2_w18_small_v2", num_keypoints=98).state_dict()
    config = {"model": "hrnetv2_w18", "input_size": 64, "heatmap_size": 16}  # not the weights' model
    path = tmp_path / "wrong.pt"
    torch.save({"model": state, "config": config}, path)
    argv = ["--checkpoint", str(path), "--data-root", str(dataset), "--out", str(tmp_path / "r.json")]
    assert report.main(argv) == 1
    assert str(path) in capsys.readouterr().err


class RunsCode:
    """Pickles as a call of Path.touch on `marker` (what a hostile file would do with os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_runs_code_is_refused_unless_trusted(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .pth whose pickle calls a function runs nothing: evaluate refuses it, naming what it holds and the
    opt-in; with --trust-checkpoint it is unpickled (the marker appears) and then found to hold no weights."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"model": RunsCode(marker)}, path)
    argv = [
        "--checkpoint",
        str(path),
        "--data-root",
        str(dataset),
        "--out",
        str(tmp_path / "r.json"),
        "--quiet",
    ]
    assert report.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{path}: refused: it holds objects of" in err and "--trust-checkpoint" in err
    assert "Traceback" not in err and not marker.exists() and not (tmp_path / "r.json").exists()
    assert report.main([*argv, "--trust-checkpoint"]) == 1
    assert marker.exists() and "no state dict found" in capsys.readouterr().err


def test_non_finite_weights_are_refused(
    dataset: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One NaN in conv1.weight: an error naming the file and the tensor, instead of an NME of noise."""
    state = torch.load(checkpoint, weights_only=True)
    state["model"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    argv = [
        "--checkpoint",
        str(path),
        "--data-root",
        str(dataset),
        "--out",
        str(tmp_path / "r.json"),
        "--quiet",
    ]
    assert report.main(argv) == 1
    assert f"{path}: conv1.weight holds 1 NaN of" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]


def test_full_disk_while_writing_results_is_a_clear_error(
    dataset: Path,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills up while the results are written: exit 1, the message says so, no traceback, and
    the results of an earlier evaluation stay as they were."""
    out = tmp_path / "results.json"
    out.write_text('{"earlier": true}\n')

    def full(path, data) -> None:
        raise NoSpaceError(f"no space left on the device of {Path(path).parent} to write {Path(path).name}")

    monkeypatch.setattr(report, "atomic_bytes", full)
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(dataset), "--out", str(out), "--quiet"]
    assert report.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: no space left on the device of" in err and "Traceback" not in err
    assert out.read_text() == '{"earlier": true}\n'


def test_format_table_rows_and_columns() -> None:
    cells = {
        name: {"faces": 10 + i, "nme": 1.0 + i, "fr": 0.5 * i, "auc": 0.5 + i / 100}
        for i, name in enumerate(report.COLUMNS)
    }
    empty = {**cells, "makeup": {"faces": 0, "nme": None, "fr": None, "auc": None}}
    text = report.format_table({"table": {"title": "best.pt", "model": cells, "baseline": empty}})
    lines = text.splitlines()
    assert lines[0] == "| WFLW-format test set | " + " | ".join(report.COLUMNS) + " |"
    assert lines[2] == "| best.pt: NME (%) | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 | 6.00 | 7.00 |"
    assert lines[3] == "| 95% interval over faces | - | - | - | - | - | - | - |"  # none recorded here
    assert lines[4] == "| FR@10% (%) | 0.00 | 0.50 | 1.00 | 1.50 | 2.00 | 2.50 | 3.00 |"
    assert lines[5] == "| AUC@10% | 0.5000 | 0.5100 | 0.5200 | 0.5300 | 0.5400 | 0.5500 | 0.5600 |"
    assert lines[6] == "| mean-shape baseline: NME (%) | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 | - | 7.00 |"
    assert lines[-1] == "| faces | 10 | 11 | 12 | 13 | 14 | 15 | 16 |"


def test_paired_difference_of_two_results_on_the_same_faces() -> None:
    """Differences face by face, averaged per column, with an interval around them; other faces refused."""

    def results(errors: list[float]) -> dict:
        faces = [{"index": i, "image": f"img{i}.jpg", "nme": e} for i, e in enumerate(errors)]
        subsets = {name: [0, 2] for name in report.COLUMNS[1:]} | {"makeup": []}
        return {"per_face": faces, "subsets": subsets}

    ours, theirs = results([0.04, 0.05, 0.06, 0.03]), results([0.05, 0.05, 0.08, 0.03])
    paired = report.paired_difference(ours, theirs)
    assert paired["test"]["faces"] == 4 and paired["test"]["difference"] == pytest.approx(-0.75)
    assert paired["pose"]["difference"] == pytest.approx(-1.5)  # faces 0 and 2: -1 and -2 points
    low, high = paired["test"]["ci95"]
    assert -2.0 <= low <= -0.75 <= high <= 0.0  # within the smallest and largest face differences
    assert paired["makeup"] == {"faces": 0, "difference": None, "ci95": None}
    other = results([0.04, 0.05, 0.06, 0.03])
    other["per_face"][1]["image"] = "elsewhere.jpg"
    with pytest.raises(ValueError, match="not of the same test faces"):
        report.paired_difference(ours, other)
    regrouped = results([0.04, 0.05, 0.06, 0.03])
    regrouped["subsets"]["pose"] = [1, 3]
    with pytest.raises(ValueError, match="not of the same test faces"):
        report.paired_difference(ours, regrouped)
    assert report.ci_text({"nme_ci95": [3.9512, 4.1234]}) == "3.95 to 4.12"
    assert report.ci_text({"nme_ci95": [3.9512, 4.1234]}, 3) == "3.951 to 4.123"
    nan = float("nan")
    assert report.ci_text({"nme_ci95": [None, None]}) == report.ci_text({"nme_ci95": [nan, nan]}) == "-"
    assert report.ci_text({}) == "-"


def test_mmpose_checkpoint_gets_the_published_model(tmp_path: Path) -> None:
    from hrnet_lib.model.weights import to_mmpose_state_dict

    torch.manual_seed(1)
    model = build_model("hrnetv2_w18", num_keypoints=98).eval()
    for module in model.modules():  # non-trivial BN statistics and head, so a wrong load would show
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "hrnetv2_w18_wflw_256x256.pth"
    meta = {"epoch": 60, "mmpose_version": "0.11.0", "config": "model = dict(...)"}
    torch.save({"state_dict": to_mmpose_state_dict(model.state_dict(), version=0), "meta": meta}, path)
    loaded, config = report.load_model(path)
    assert config["model"] == "hrnetv2_w18" and config["input_size"] == 256 and config["heatmap_size"] == 64
    assert config["weights_layout"].startswith("mmpose")
    images = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.eval()(images), model(images))


def test_nme_row_names_the_row_and_keeps_the_model_zoo_column_order() -> None:
    table = {column: {"nme": float(i), "faces": 3} for i, column in enumerate(reversed(report.COLUMNS))}
    table["pose"]["nme"] = None  # an empty subset
    row = report.nme_row("this run", table)
    assert row[0] == "this run" and len(row) == 1 + len(report.COLUMNS)
    assert row[1:] == [
        table[column]["nme"]
        for column in ("test", "pose", "illumination", "occlusion", "blur", "makeup", "expression")
    ]
    assert row[2] is None
