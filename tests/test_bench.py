"""What `python -m hrnet_lib bench` records, not how fast: the cold-start diagnostic, the precision
variants side by side, and the model FLOP rate."""

from __future__ import annotations

import json
import os

import pytest
import torch

from hrnet_lib.bench import (
    COLD_START_VARIANTS,
    PRECISION_VARIANTS,
    _print_cold_starts,
    main,
    model_flops_rate,
    precision_inference,
    precision_train_steps,
    run_cold_starts,
)
from hrnet_lib.data.synthetic import synthesize
from hrnet_lib.device import resolve_precision
from hrnet_lib.model.inference import forward_flops
from hrnet_lib.train.presets import apply_overrides, get_preset


def test_cold_start_profiles_the_first_training_step_and_validation_pass(
    tmp_path, monkeypatch, capsys
) -> None:
    # In this process, as the no-cudnn variant's child runs it (a CPU uses no cuDNN either way).
    monkeypatch.setattr(torch.backends.cudnn, "enabled", True)  # restored after the test
    child = ["--cold-start-child", "no-cudnn", "--train-preset", "smoke", "--batch", "2"]
    assert main([*child, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cold_start_no-cudnn.json").read_text())
    assert result["cudnn_enabled"] is False and torch.backends.cudnn.enabled is False
    assert result["variant"] == "no-cudnn" and result["overrides"] == [] and result["env"] == {}
    assert all(v.cudnn for name, v in COLD_START_VARIANTS.items() if name != "no-cudnn")
    assert result["batch"] == 2 and result["setup_s"] > 0
    for name in ("train", "validation"):
        part = result[name]
        assert part["first_s"] > 0 and part["steady_s"] > 0
        ops = part["top_ops"]
        assert 0 < len(ops) <= 12
        times = [op["self_cpu_s"] for op in ops]
        assert times == sorted(times, reverse=True)
        assert all(op["cpu_total_s"] >= op["self_cpu_s"] >= 0 and op["calls"] >= 1 for op in ops)
    # The profiler saw the model's convolutions: backward ones only in the training step.
    train_ops = {op["op"] for op in result["train"]["top_ops"]}
    assert any("convolution_backward" in op for op in train_ops)
    validation_ops = {op["op"] for op in result["validation"]["top_ops"]}
    assert any("convolution" in op for op in validation_ops)
    assert not any("backward" in op for op in validation_ops)
    # On a CPU there is no separate device to be busy: no busy time or kernels are claimed.
    for name in ("train", "validation"):
        assert result[name]["first_device_busy_s"] is None and result[name]["steady_device_busy_s"] is None
        assert result[name]["steady_top_kernels"] == []
    # A new batch shape in the warm process: half the images, a full training step (backward included).
    new_batch = result["train_new_batch"]
    assert new_batch["batch"] == 1 and new_batch["wall_s"] > 0 and new_batch["device_busy_s"] is None
    assert any("backward" in op["op"] for op in new_batch["top_ops"])
    # The printed table: a row of seconds for the variant (no busy times on a CPU), then its top ops.
    _print_cold_starts({"no-cudnn": {**result, "process_wall_s": 9.0}})
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("no-cudnn "))
    assert row.split()[1:3] == ["9.0", f"{result['setup_s']:.1f}"] and "/" not in row
    assert any(line.startswith("no-cudnn, first train call, most CPU time: ") for line in lines)


def test_each_variant_runs_in_its_own_process_with_its_environment_and_overrides(tmp_path) -> None:
    results = run_cold_starts("smoke", ["cudnn-v7-api", "fp32-nchw"], batch=2, out=tmp_path)
    assert list(results) == ["cudnn-v7-api", "fp32-nchw"]
    assert results["cudnn-v7-api"]["env"] == {"TORCH_CUDNN_V8_API_DISABLED": "1"}
    assert "TORCH_CUDNN_V8_API_DISABLED" not in os.environ
    assert results["fp32-nchw"]["overrides"] == COLD_START_VARIANTS["fp32-nchw"].overrides
    assert results["fp32-nchw"]["config"]["precision"] == "fp32"
    assert results["fp32-nchw"]["config"]["channels_last"] is False
    assert results["cudnn-v7-api"]["config"]["precision"] == resolve_precision(torch.device("cpu"), "auto")
    assert results["cudnn-v7-api"]["cudnn_enabled"] is True
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


def test_precision_variants_time_one_training_step_and_one_forward_each(tmp_path) -> None:
    synthesize(tmp_path, n_train=8, n_test=2, seed=0, progress=False)
    cfg = apply_overrides(get_preset("smoke"), ["global_batch=4", "per_device_batch=2"])
    train = precision_train_steps(cfg, tmp_path, steps=2, warmup=1)
    assert list(train["images_per_s"]) == list(PRECISION_VARIANTS) == list(train["ratio"])
    assert train["global_batch"] == 4 and train["steps"] == 2
    for name, speed in train["images_per_s"].items():
        assert speed == pytest.approx(4 / train["step_s"][name])
        assert train["ratio"][name] == pytest.approx(speed / train["images_per_s"]["fp32_nchw"])
        assert train["model_tflops_per_s"][name] == pytest.approx(
            speed * 3 * forward_flops(cfg.model, 64) / 1e12
        )
    inference = precision_inference("hrnetv2_w18_small_v2", input_size=64, batch=2, iters=2)
    assert list(inference["images_per_s"]) == list(PRECISION_VARIANTS)
    assert inference["ratio"]["fp32_nchw"] == 1.0 and all(v > 0 for v in inference["images_per_s"].values())


def test_model_flop_rate_has_no_peak_and_no_mfu_on_a_cpu() -> None:
    cfg = get_preset("cpu-default")
    rate = model_flops_rate(cfg, 10.0, torch.device("cpu"))
    flops = 3 * forward_flops(cfg.model, cfg.input_size)
    assert rate == {
        "model_tflops_per_s": pytest.approx(10 * flops / 1e12),
        "dense_bf16_peak_tflops": None,
        "mfu": None,
    }
