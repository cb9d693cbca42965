"""Tests for the ONNX export (hrnet_lib.model.onnx, hrnet_lib.evaluate.export): onnxruntime against the
PyTorch model for heatmaps at several batch sizes and for decoded landmarks, the metadata that lets the
file run on its own, and an export that is refused when onnxruntime disagrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from oracle import small_checkpoint

from hrnet_lib.evaluate import export
from hrnet_lib.evaluate.landmarker import Landmarker
from hrnet_lib.model.onnx import OPSET, OnnxHeatmaps, bench_onnxruntime, heatmap_difference


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Module]:
    """(checkpoint, its ONNX file written by the command, the PyTorch model)."""
    folder = tmp_path_factory.mktemp("export")
    checkpoint, model = small_checkpoint(folder / "best.pt")
    out = folder / "model.onnx"
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    return checkpoint, out, model


@pytest.mark.parametrize("batch", [1, 5])
def test_heatmaps_match_pytorch_at_any_batch_size(exported, batch: int) -> None:
    _, path, model = exported
    images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        reference = model.eval()(images).numpy()
    heatmaps = OnnxHeatmaps(path)(images).numpy()
    assert heatmaps.shape == reference.shape == (batch, 98, 16, 16)
    assert np.abs(reference).max() > 0.1  # a real signal, not the near-zero output of a fresh model
    assert heatmap_difference(reference, heatmaps).max() <= export.HEATMAP_TOLERANCE


def test_file_is_valid_onnx_with_a_dynamic_batch_and_the_model_settings(exported) -> None:
    _, path, _ = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == OPSET
    (graph_input,) = proto.graph.input
    assert graph_input.name == "images"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert metadata["input_size"] == "64" and metadata["heatmap_size"] == "16"
    assert metadata["num_keypoints"] == "98" and metadata["model"] == "hrnetv2_w18_small_v2"


def test_onnx_file_gives_the_landmarks_of_the_checkpoint(exported) -> None:
    checkpoint, path, _ = exported
    photo = np.random.default_rng(0).integers(0, 255, size=(150, 200, 3), dtype=np.uint8)
    boxes = np.array([[60.0, 30.0, 140.0, 130.0], [0.0, 0.0, 50.0, 60.0]])
    onnx_landmarker = Landmarker(path)
    assert onnx_landmarker.backend == "onnxruntime" and onnx_landmarker.input_size == 64
    for flip in (False, True):
        onnx_landmarker.flip_test = flip
        reference = Landmarker(checkpoint, flip_test=flip, precision="fp32")(photo, boxes, color="rgb")
        for ours, theirs in zip(onnx_landmarker(photo, boxes, color="rgb"), reference, strict=True):
            assert np.abs(ours.landmarks - theirs.landmarks).max() <= export.LANDMARK_TOLERANCE_PX


def test_export_check_measures_both_tolerances(exported) -> None:
    _, path, model = exported
    record = export.parity(model, OnnxHeatmaps(path), 64, 16)
    assert record["faces"] == export.CHECK_FACES
    assert 0 <= record["heatmap_max_diff_over_peak"] <= export.HEATMAP_TOLERANCE
    assert 0 <= record["landmark_max_diff_px"] <= export.LANDMARK_TOLERANCE_PX


class Perturbed(OnnxHeatmaps):
    """onnxruntime's heatmaps with a bump of 1% of the peak at pixel (3, 3) of every map."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        heatmaps = super().forward(images)
        heatmaps[:, :, 3, 3] += 0.01 * heatmaps.abs().amax(dim=(1, 2, 3))[:, None]
        return heatmaps


def test_export_that_disagrees_with_pytorch_is_refused(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    checkpoint, _, _ = exported
    monkeypatch.setattr(export, "OnnxHeatmaps", Perturbed)
    out = tmp_path / "bad.onnx"
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "onnxruntime does not reproduce PyTorch" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == []


def test_out_must_name_an_onnx_file(exported, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, _, _ = exported
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.pt")]) == 1
    assert "name the .onnx file" in capsys.readouterr().err


def test_bench_sets_onnxruntime_beside_eager_and_fused() -> None:
    """What the bench records (not how fast): the three variants per batch size and their ratios."""
    result = bench_onnxruntime(
        batch_sizes=(2,), iters=1, input_size=64, name="hrnetv2_w18_small_v2", threads=1
    )
    assert result["onnxruntime_threads"] == 1 and result["opset"] == OPSET
    speeds = result["images_per_s"][2]
    assert set(speeds) == {"eager", "fused", "onnxruntime"} and all(v > 0 for v in speeds.values())
    assert result["onnxruntime_vs_fused"][2] == pytest.approx(speeds["onnxruntime"] / speeds["fused"])
    assert result["onnxruntime_vs_eager"][2] == pytest.approx(speeds["onnxruntime"] / speeds["eager"])
