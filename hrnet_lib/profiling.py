"""Where one call's time goes: its wall time, the GPU's busy time in it, and the ops and kernels that took it.

On a GPU, wall time minus busy time is the host's part (Python, kernel launches, cuDNN choosing and building
plans and, on a device reached through a proxy, the proxy), which no faster kernel can remove.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.autograd import DeviceType


def busy_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: the time at least one of them was running, each
    overlap counted once (kernels on several streams may overlap)."""
    total, reach = 0.0, -float("inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _gpu_work(event: Any) -> bool:
    """Whether a profiler event is work the GPU did (a kernel, copy or memset), not a `record_function`
    range drawn over the GPU's timeline (such as `Optimizer.step#Adam.step`), which spans its gaps too."""
    return event.device_type == DeviceType.CUDA and not getattr(event, "is_user_annotation", False)


def profile_call(call: Callable[[], None], sync: Callable[[], None], device: torch.device, rows: int) -> dict:
    """Run `call` once under the profiler (its device too when it is a GPU) and say where its time went.

    Keys: wall_s; device_busy_s, the union of the GPU's kernel and copy intervals (None on a CPU, where the
    host is the device, and where the profiler saw no GPU work: `device_events` says how many it saw);
    top_ops, the `rows` ops with the most CPU time of their own (on a GPU the final synchronisation is
    the host waiting for it); top_kernels, the `rows` GPU kernels with the most device time.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        [wall] = timed_calls(call, sync, 1)
    averages = profiler.key_averages()
    host = sorted(
        (e for e in averages if e.device_type == DeviceType.CPU), key=lambda e: -e.self_cpu_time_total
    )
    kernels = sorted((e for e in averages if _gpu_work(e)), key=lambda e: -e.self_device_time_total)
    on_device = [e for e in profiler.events() if _gpu_work(e)]
    busy = busy_length((e.time_range.start, e.time_range.end) for e in on_device) / 1e6
    return {
        "wall_s": wall,
        "device_busy_s": busy if on_device else None,
        "device_events": len(on_device) if cuda else None,
        "top_ops": [
            {
                "op": e.key,
                "calls": e.count,
                "self_cpu_s": e.self_cpu_time_total / 1e6,
                "cpu_total_s": e.cpu_time_total / 1e6,
            }
            for e in host[:rows]
        ],
        "top_kernels": [
            {"kernel": e.key, "calls": e.count, "device_s": e.self_device_time_total / 1e6}
            for e in kernels[:rows]
        ],
    }


def timed_calls(call: Callable[[], None], sync: Callable[[], None], n: int) -> list[float]:
    """Wall seconds of `n` calls, each waiting for the device before its clock stops."""
    times = []
    for _ in range(n):
        begin = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - begin)
    return times


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for `device`'s queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
