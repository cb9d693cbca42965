"""The profiled-call summary: the union of busy intervals by hand, and what a CPU call reports."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from hrnet_lib.profiling import _gpu_work, busy_length, profile_call, timed_calls


@pytest.mark.parametrize(
    ("intervals", "length"),
    [
        ([], 0.0),
        ([(0.0, 2.0), (5.0, 6.0)], 3.0),  # apart: the sum
        ([(0.0, 2.0), (1.0, 3.0)], 3.0),  # overlapping: [0, 3]
        ([(0.0, 10.0), (2.0, 3.0), (4.0, 9.0)], 10.0),  # nested: the outer one
        ([(1.0, 2.0), (0.0, 1.0)], 2.0),  # touching, given out of order
        ([(4.0, 7.0), (0.0, 1.0), (6.0, 8.0), (0.5, 2.0)], 6.0),  # [0, 2] and [4, 8]
    ],
)
def test_busy_length_counts_each_overlap_once(intervals, length) -> None:
    assert busy_length(intervals) == pytest.approx(length)


def test_a_profiled_cpu_call_names_its_ops_and_claims_no_device_time() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(2, 3, 32, 32)

    def call() -> None:
        conv(x).square().sum().backward()

    result = profile_call(call, lambda: None, torch.device("cpu"), rows=3)
    assert result["wall_s"] > 0
    assert result["device_busy_s"] is None and result["top_kernels"] == []  # the host is the device
    assert result["device_events"] is None
    ops = result["top_ops"]
    assert 0 < len(ops) <= 3
    assert [op["self_cpu_s"] for op in ops] == sorted((op["self_cpu_s"] for op in ops), reverse=True)
    everything = profile_call(call, lambda: None, torch.device("cpu"), rows=1000)["top_ops"]
    assert any("convolution_backward" in op["op"] for op in everything)


def test_gpu_work_is_kernels_and_copies_not_ranges_drawn_over_them() -> None:
    def event(device: DeviceType, annotation: bool) -> SimpleNamespace:
        return SimpleNamespace(device_type=device, is_user_annotation=annotation)

    assert _gpu_work(event(DeviceType.CUDA, False))  # a kernel, copy or memset
    assert not _gpu_work(event(DeviceType.CUDA, True))  # e.g. Optimizer.step#Adam.step, gaps included
    assert not _gpu_work(event(DeviceType.CPU, False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's timeline needs a GPU (run on one)")
def test_busy_time_on_a_gpu_leaves_out_the_host_pause_between_kernels() -> None:
    device = torch.device("cuda")
    a = torch.randn(1024, 1024, device=device)

    def call() -> None:
        with torch.profiler.record_function("span"):  # drawn over both kernels and the pause
            a @ a
            torch.cuda.synchronize(device)
            time.sleep(0.05)
            a @ a

    result = profile_call(call, lambda: torch.cuda.synchronize(device), device, rows=5)
    assert result["device_events"] >= 2 and result["top_kernels"]
    assert 0 < result["device_busy_s"] < result["wall_s"] - 0.04
    assert all("span" not in k["kernel"] for k in result["top_kernels"])


def test_timed_calls_waits_for_the_device_before_each_clock_stops() -> None:
    events: list[str] = []
    times = timed_calls(lambda: events.append("call"), lambda: events.append("sync"), 3)
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert events == ["call", "sync"] * 3
