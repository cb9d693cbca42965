"""Where work runs: the torch device a name means, its precision, its peak memory and its bf16 peak.

Precision is decided here once for every path (training, validation, evaluation, predict, the inference
copy): bf16 autocast where the device runs bf16 natively (CUDA; a CPU with AMX or AVX-512 BF16), fp32
elsewhere, unless a caller forces one of them.
"""

from __future__ import annotations

import contextlib
import re
import resource
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

#: What a precision setting may say: "auto" (bf16 where the device runs it natively), "bf16" or "fp32".
PRECISIONS = ("auto", "bf16", "fp32")
#: The CPU features whose instructions compute in bf16 (x86: AMX tiles, AVX-512 BF16 dot products).
CPU_BF16_FEATURES = ("amx_bf16", "avx512_bf16")
#: Where Linux lists the CPU's flags, read where torch cannot say (an older torch lacks `get_capabilities`).
CPUINFO = Path("/proc/cpuinfo")

#: Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s by CUDA device name, most specific pattern
#: first. NVIDIA's datasheets quote bf16 "with sparsity"; the dense peak is half of it: A100 (SXM4 and
#: PCIe) 624 -> 312; H100 SXM 1,979 -> 989.5, H100 NVL 1,671 -> 835.5, H100 PCIe 1,513 -> 756.5;
#: H200 SXM 1,979 -> 989.5, H200 NVL 1,671 -> 835.5; L40S 733 -> 366.5; L4 242 -> 121.
DENSE_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bH200 NVL\b", 835.5),
    (r"\bH200\b", 989.5),
    (r"\bH100 NVL\b", 835.5),
    (r"\bH100 PCIe\b", 756.5),
    (r"\bH100\b.*\b(SXM|HBM3)", 989.5),
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 366.5),
    (r"\bL4\b", 121.0),
)


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """The torch device for a name: "auto" is cuda when available, else cpu; a ValueError saying what is
    valid for a name torch does not know, another device type, or a GPU this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{option} {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {name}: no CUDA device is available here (use auto or cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@lru_cache(maxsize=1)
def cpu_capabilities() -> Mapping[str, Any]:
    """This CPU's features as torch detects them (`torch.cpu.get_capabilities`), or, with a torch too old
    to have it, the flags of /proc/cpuinfo (each flag True); empty when neither can be read."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return dict(get())
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    flags = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return {flag: True for flag in flags.group(1).split()} if flags else {}


def cpu_bf16_native(capabilities: Mapping[str, Any] | None = None) -> bool:
    """Whether the CPU (or one with the given `capabilities`) has bf16 instructions (AMX or AVX-512 BF16);
    without them bf16 would be emulated, slower than fp32."""
    capabilities = cpu_capabilities() if capabilities is None else capabilities
    return any(bool(capabilities.get(feature)) for feature in CPU_BF16_FEATURES)


def resolve_precision(
    device: torch.device, requested: str = "auto", capabilities: Mapping[str, Any] | None = None
) -> str:
    """The precision that runs, "bf16" or "fp32", for a `requested` one of PRECISIONS on `device`.

    "auto" is bf16 on CUDA and on a CPU with bf16 instructions (`cpu_bf16_native`; `capabilities` stand
    in for this CPU's in tests), fp32 on any other CPU; "bf16" and "fp32" force their precision.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: use {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.type == "cuda" or cpu_bf16_native(capabilities):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` (CUDA or CPU) when `precision` resolves to bf16; nothing for fp32.

    Autocast keeps the weights in fp32 and runs convolutions and matrix products in bf16; the callers
    take the outputs back to fp32 before losses and decoding.
    """
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dense_bf16_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a device by its name (`provenance.hardware`, CUDA's device name),
    from DENSE_BF16_PEAK_TFLOPS; None for a CPU or a GPU not in the table: a peak is never guessed."""
    for pattern, peak in DENSE_BF16_PEAK_TFLOPS:
        if re.search(pattern, name):
            return peak
    return None
