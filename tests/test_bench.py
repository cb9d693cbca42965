"""The cold-start diagnostic of `python -m hrnet_lib bench --cold-start` (what it records, not how fast)."""

from __future__ import annotations

import os

import pytest

from hrnet_lib.bench import COLD_START_VARIANTS, cold_start, main, run_cold_starts
from hrnet_lib.train.presets import get_preset


def test_cold_start_profiles_the_first_training_step_and_validation_pass() -> None:
    result = cold_start(get_preset("smoke"), batch=2, steps=2, rows=5)
    assert result["batch"] == 2 and result["setup_s"] > 0
    for name in ("train", "validation"):
        part = result[name]
        assert part["first_s"] > 0 and part["steady_s"] > 0
        ops = part["top_ops"]
        assert 0 < len(ops) <= 5
        times = [op["self_cpu_s"] for op in ops]
        assert times == sorted(times, reverse=True)
        assert all(op["cpu_total_s"] >= op["self_cpu_s"] >= 0 and op["calls"] >= 1 for op in ops)
    # The profiler saw the model's convolutions: backward ones only in the training step.
    train_ops = {op["op"] for op in result["train"]["top_ops"]}
    assert any("convolution_backward" in op for op in train_ops)
    validation_ops = {op["op"] for op in result["validation"]["top_ops"]}
    assert any("convolution" in op for op in validation_ops)
    assert not any("backward" in op for op in validation_ops)


def test_each_variant_runs_in_its_own_process_with_its_environment_and_overrides(tmp_path) -> None:
    results = run_cold_starts("smoke", ["cudnn-v7-api", "fp32-nchw"], batch=2, out=tmp_path)
    assert list(results) == ["cudnn-v7-api", "fp32-nchw"]
    assert results["cudnn-v7-api"]["env"] == {"TORCH_CUDNN_V8_API_DISABLED": "1"}
    assert "TORCH_CUDNN_V8_API_DISABLED" not in os.environ
    assert results["fp32-nchw"]["overrides"] == COLD_START_VARIANTS["fp32-nchw"][0]
    assert results["fp32-nchw"]["config"]["bf16"] is False
    assert results["cudnn-v7-api"]["config"]["bf16"] is True
    for result in results.values():
        assert result["process_wall_s"] > result["setup_s"] + result["train"]["first_s"]
        assert (tmp_path / f"cold_start_{result['variant']}.json").is_file()


def test_unknown_variant_names_the_valid_ones(tmp_path) -> None:
    with pytest.raises(SystemExit, match="no-benchmark"):
        run_cold_starts("smoke", ["default", "warp-speed"], batch=2, out=tmp_path)


def test_unknown_train_preset_is_refused_before_any_timing(tmp_path, capsys) -> None:
    assert main(["--train-preset", "wflw-9gpu", "--out", str(tmp_path / "b")]) == 2
    assert "unknown preset 'wflw-9gpu'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # nothing synthesised or measured
