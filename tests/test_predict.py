"""Tests for hrnet_lib.evaluate.predict: the predict command on a photo with a box and on a synthetic
video, and the clear errors for an unreadable photo, one without a detectable face, or a bad box."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hrnet_lib.data import synthetic_video
from hrnet_lib.data.video import VideoReader
from hrnet_lib.device import resolve_precision
from hrnet_lib.evaluate import predict
from hrnet_lib.evaluate.boxes import landmark_box
from hrnet_lib.io import read_jsonl
from hrnet_lib.model.hrnet import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised small HRNet at 64 px input, in the project's checkpoint format."""
    torch.manual_seed(0)
    model = build_model("hrnetv2_w18_small_v2", num_keypoints=98)
    config = {"model": "hrnetv2_w18_small_v2", "num_keypoints": 98, "upsample": "bilinear"}
    config |= {"input_size": 64, "heatmap_size": 16}
    path = tmp_path_factory.mktemp("run") / "best.pt"
    torch.save({"model": model.state_dict(), "config": config}, path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 240x320 photo: noise with a skin-coloured ellipse where the face box is."""
    image = np.random.default_rng(0).integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    cv2.ellipse(image, (160, 120), (45, 60), 0, 0, 360, (120, 160, 210), -1)
    path = tmp_path_factory.mktemp("photos") / "face.jpg"
    cv2.imwrite(str(path), image)
    return path


def test_predict_with_box_writes_png_and_json(checkpoint: Path, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.png"
    argv = [
        str(photo),
        "--checkpoint",
        str(checkpoint),
        "--box",
        "115",
        "60",
        "205",
        "180",
        "--out",
        str(out),
    ]
    assert predict.main([*argv, "--device", "cpu"]) == 0
    drawn = cv2.imread(str(out))
    assert drawn is not None and drawn.shape == (240, 320, 3)
    assert not np.array_equal(drawn, cv2.imread(str(photo)))  # something was drawn
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["box_source"] == "--box" and len(result["faces"]) == 1
    assert result["precision"] == resolve_precision(torch.device("cpu"), "auto")  # bf16 where native
    face = result["faces"][0]
    landmarks = np.array(face["landmarks"])
    assert landmarks.shape == (98, 2) and np.isfinite(landmarks).all()
    assert len(face["scores"]) == 98
    # Every point lies in the padded crop (side 1.25 x 120 around the box centre), give or take a
    # heatmap pixel (the -1 of a non-positive maximum).
    side, stride_px = 1.25 * 120, 1.25 * 120 / 16
    assert np.all(np.abs(landmarks - [160, 120]) <= side / 2 + stride_px + 1e-6)


def test_unreadable_image_is_a_clear_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    assert predict.main([str(bad), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot read image" in err
    assert not (tmp_path / "o.png").exists()


def test_truncated_jpeg_is_refused_as_the_dataset_reader_refuses_it(
    checkpoint: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """OpenCV decodes a JPEG cut short and fills the rest with grey; predict refuses it, as `data check`
    does, instead of predicting landmarks on the grey."""
    data = photo.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(cut)) is not None  # OpenCV alone takes it
    argv = [str(cut), "--checkpoint", str(checkpoint), "--box", "115", "60", "205", "180"]
    assert predict.main([*argv, "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert f"{cut}: cannot read image" in err and "truncated" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jpg"]


class RunsCode:
    """Pickles as a call of Path.touch on `marker` (what a hostile file would do with os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_unsafe_and_non_finite_checkpoints_are_refused(
    checkpoint: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint whose pickle runs code is refused (the marker is not created) and names the opt-in; one
    with a NaN weight is refused naming the tensor, and no PNG or JSON (with bare NaN) is written."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"model": RunsCode(marker)}, evil)
    state = torch.load(checkpoint, weights_only=True)
    state["model"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    broken = tmp_path / "nan.pt"
    torch.save(state, broken)
    argv = [str(photo), "--box", "115", "60", "205", "180", "--out", str(tmp_path / "o.png")]
    assert predict.main([*argv, "--checkpoint", str(evil)]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "--trust-checkpoint" in err and not marker.exists()
    assert predict.main([*argv, "--checkpoint", str(broken)]) == 1
    assert f"{broken}: conv1.weight holds 1 NaN" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth", "nan.pt"]


def test_no_face_found_suggests_box(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, dtype=np.uint8))
    assert predict.main([str(blank), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o.png")]) == 1
    # Either the detector found nothing, or this OpenCV has no bundled cascade: both name --box.
    assert "--box x0 y0 x1 y1" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["o.json", "o.jpg", "o"])
def test_out_must_name_the_png(
    checkpoint: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture, name: str
) -> None:
    argv = [str(photo), "--checkpoint", str(checkpoint), "--box", "40", "40", "90", "90"]
    assert predict.main([*argv, "--out", str(tmp_path / name)]) == 1
    assert "name the PNG to write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("50 50 40 90", "x1 > x0"),
        ("50 nan 90 90", "must be finite"),
        ("320 10 400 90", "lies wholly outside"),  # the photo is 320 wide: x0 = 320 is past its last column
        ("-90 -90 0 0", "lies wholly outside"),
        ("-90 10 0 90", "lies wholly outside"),  # left of the photo
        ("10 -90 90 0", "lies wholly outside"),  # above it
        ("10 240 90 300", "(320 x 240 pixels)"),
    ],
)
def test_bad_box_is_a_clear_error(
    checkpoint: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture, box: str, message: str
) -> None:
    argv = [str(photo), "--checkpoint", str(checkpoint), "--box", *box.split()]
    assert predict.main([*argv, "--out", str(tmp_path / "o.png")]) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_box_partly_outside_the_photo_is_predicted(checkpoint: Path, photo: Path, tmp_path: Path) -> None:
    """A face cut by the border still gets its 98 landmarks, mapped back into image pixels near the box."""
    argv = [str(photo), "--checkpoint", str(checkpoint), "--box", "280", "-20", "360", "60"]
    assert predict.main([*argv, "--out", str(tmp_path / "o.png")]) == 0
    (face,) = json.loads((tmp_path / "o.json").read_text())["faces"]
    points = np.array(face["landmarks"])
    assert points.shape == (98, 2) and np.isfinite(points).all()
    # Within the padded crop, the box's square (side 80) padded 1.25 around its centre (320, 20), give or
    # take one heatmap pixel (100 / 16): an untrained heatmap with no positive value decodes to -1 (mmpose).
    assert np.all(np.abs(points - [320, 20]) <= 1.25 * 80 / 2 + 100 / 16 + 1e-6)


def test_predict_video_tracks_and_writes_video_frames_and_summary(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    video = tmp_path / "clip.mp4"
    assert synthetic_video.main(["--out", str(video), "--frames", "8"]) == 0
    truth = read_jsonl(synthetic_video.truth_path(video))
    assert [r["frame"] for r in truth] == list(range(8))
    box = landmark_box(np.array(truth[0]["landmarks"]))
    out = tmp_path / "annotated.mp4"
    argv = [str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", "--quiet"]
    argv += [
        "--box",
        *map(str, box),
        "--min-score",
        "0",
        "--smooth",
        "--truth",
        str(synthetic_video.truth_path(video)),
    ]
    assert predict.main(argv) == 0
    printed = capsys.readouterr().out
    assert "8 frames" in printed and "jitter" in printed
    written = VideoReader(out)
    assert (written.width, written.height) == (640, 480) and len(list(written)) == 8
    frames = read_jsonl(out.with_suffix(".jsonl"))
    assert [r["frame"] for r in frames] == list(range(8))
    assert all(len(r["faces"]) == 1 and np.array(r["faces"][0]["landmarks"]).shape == (98, 2) for r in frames)
    np.testing.assert_allclose(frames[0]["faces"][0]["box"], box)  # the given box starts the track
    assert not any(r["detector"] for r in frames)  # never lost (--min-score 0): no detection
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["frames"] == 8 and summary["detector_runs"] == 0 and summary["tracker"]["smoothing"]
    assert summary["metrics"]["frames"] == 8 and summary["metrics"]["missed_frames"] == 0


def test_predict_video_needs_an_mp4_out(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    video = tmp_path / "clip.mp4"
    assert synthetic_video.main(["--out", str(video), "--frames", "2"]) == 0
    assert predict.main([str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a.png")]) == 1
    assert "name the .mp4" in capsys.readouterr().err


def test_precision_flag_forces_fp32_or_bf16(checkpoint: Path, photo: Path, tmp_path: Path) -> None:
    """On any CPU, fp32 and bf16 are both chosen by the flag and the JSON says which ran."""
    argv = [
        str(photo),
        "--checkpoint",
        str(checkpoint),
        "--box",
        "115",
        "60",
        "205",
        "180",
        "--device",
        "cpu",
    ]
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.png"
        assert predict.main([*argv, "--out", str(out), "--precision", precision]) == 0
        result = json.loads(out.with_suffix(".json").read_text())
        assert result["precision"] == precision
        landmarks = np.array(result["faces"][0]["landmarks"])
        assert landmarks.shape == (98, 2) and np.isfinite(landmarks).all()
