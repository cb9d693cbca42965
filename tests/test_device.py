"""Where work runs: the precision decision (with injected CPU features, so it holds on any CPU), autocast
really computing in the precision chosen, and the table of bf16 peaks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hrnet_lib import device
from hrnet_lib.device import (
    autocast,
    cpu_bf16_native,
    cpu_capabilities,
    dense_bf16_peak_tflops,
    resolve_precision,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
NO_BF16 = {"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ({"avx512_f": True, "avx512_bf16": True}, "bf16"),  # AVX-512 BF16 (Cooper Lake, Zen 4 and later)
        ({"amx_tile": True, "amx_bf16": True}, "bf16"),  # AMX (Sapphire Rapids and later)
        (NO_BF16, "fp32"),  # AVX-512 without its bf16 instructions: bf16 would be emulated
        ({"avx2": True}, "fp32"),
        ({}, "fp32"),  # nothing known about the CPU
    ],
)
def test_auto_is_bf16_only_on_a_cpu_with_bf16_instructions(capabilities: dict, expected: str) -> None:
    assert cpu_bf16_native(capabilities) is (expected == "bf16")
    assert resolve_precision(CPU, "auto", capabilities) == expected


def test_cuda_auto_is_bf16_and_forced_precisions_win_everywhere() -> None:
    assert resolve_precision(CUDA, "auto", NO_BF16) == "bf16"  # as before: every GPU run autocasts
    for where in (CPU, CUDA):
        for capabilities in (NO_BF16, {"avx512_bf16": True}):
            assert resolve_precision(where, "fp32", capabilities) == "fp32"
            assert resolve_precision(where, "bf16", capabilities) == "bf16"
    with pytest.raises(ValueError, match="precision 'fp16': use auto, bf16, fp32"):
        resolve_precision(CPU, "fp16")


def test_this_cpu_is_asked_through_torch_or_proc_cpuinfo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if hasattr(torch.cpu, "get_capabilities"):
        assert cpu_capabilities().get("avx512_bf16") == torch.cpu.get_capabilities().get("avx512_bf16")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\nbugs\t\t: none\n")
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(device, "CPUINFO", cpuinfo)
    cpu_capabilities.cache_clear()
    try:
        found = cpu_capabilities()
        assert found["avx512_bf16"] is True and found["avx2"] is True and "none" not in found
        assert cpu_bf16_native() is True
        cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
        cpu_capabilities.cache_clear()
        assert cpu_bf16_native() is False
        monkeypatch.setattr(device, "CPUINFO", tmp_path / "missing")
        cpu_capabilities.cache_clear()
        assert cpu_capabilities() == {} and resolve_precision(CPU, "auto") == "fp32"
    finally:
        cpu_capabilities.cache_clear()


def conv_output_dtype(precision: str) -> torch.dtype:
    """The dtype a convolution computes in under `autocast(cpu, precision)` (fp32 weights and input)."""
    conv = nn.Conv2d(3, 4, 3)
    with autocast(CPU, precision):
        return conv(torch.randn(1, 3, 8, 8)).dtype


def test_autocast_computes_in_the_precision_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    assert conv_output_dtype("bf16") == torch.bfloat16
    assert conv_output_dtype("fp32") == torch.float32
    monkeypatch.setattr(device, "cpu_capabilities", lambda: NO_BF16)  # a CPU without bf16: fp32 as before
    assert conv_output_dtype("auto") == torch.float32
    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"amx_bf16": True})
    assert conv_output_dtype("auto") == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.5),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA H100 80GB HBM3", 989.5),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L40S", 366.5),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40", None),  # not in the table: never guessed
        ("NVIDIA A10", None),
        ("NVIDIA H100", None),  # which H100 is not said: SXM and PCIe differ
        ("cpu (x86_64, 2 cores)", None),
    ],
)
def test_dense_bf16_peaks_by_device_name(name: str, peak: float | None) -> None:
    assert dense_bf16_peak_tflops(name) == peak
