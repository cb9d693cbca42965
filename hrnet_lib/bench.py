"""`python -m hrnet_lib bench`: throughput of data loading, the model and a training step.

Benchmarks are not tests: this measures and writes `OUT/bench.json` and `OUT/bench.png`, and prints
the JSON. Every number is measured on the machine that runs it; nothing is estimated.

`--cold-start VARIANTS` measures instead where a fresh process spends its first training step and
first validation pass (each variant in its own process, since a cold start happens once a process),
and writes `OUT/cold_start.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from hrnet_lib.data.loader import bench_loader, worker_options
from hrnet_lib.data.synthetic import synthesize
from hrnet_lib.device import (
    cpu_bf16_native,
    dense_bf16_peak_tflops,
    memory_mb,
    resolve_device,
    resolve_precision,
)
from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.io import save_json
from hrnet_lib.model.hrnet import build_model
from hrnet_lib.model.inference import (
    _time_variants,
    bench_forward,
    calibrate_batchnorm,
    optimize_for_inference,
)
from hrnet_lib.model.onnx import bench_onnxruntime
from hrnet_lib.profiling import device_sync, profile_call, timed_calls
from hrnet_lib.provenance import hardware
from hrnet_lib.train.datasets import build_datasets
from hrnet_lib.train.loop import build_training_model, compile_model, forward_backward
from hrnet_lib.train.presets import ConfigError, TrainConfig, apply_overrides, get_preset
from hrnet_lib.train.run_dir import training_flops
from hrnet_lib.train.runtime import Runtime, TrainingError, batch_sizes, set_train_mode


class ColdStartVariant(NamedTuple):
    """A fresh process's setting for `bench --cold-start`: config overrides, environment variables, and
    whether cuDNN is used at all."""

    overrides: list[str]
    env: dict[str, str]
    cudnn: bool = True


# The candidate causes of a slow first step each variant tests: cuDNN's algorithm search, bf16/channels_last
# kernels, the cuDNN v8 (graph) API's plan building, CUDA's lazy loading of kernels, and cuDNN itself (off:
# convolutions and BatchNorm run PyTorch's own CUDA kernels, which need no plans); then what the memory
# format and compiling (its time in the first step) do to the steady step.
COLD_START_VARIANTS: dict[str, ColdStartVariant] = {
    "default": ColdStartVariant([], {}),
    "no-benchmark": ColdStartVariant(["cudnn_benchmark=false"], {}),
    "fp32-nchw": ColdStartVariant(["precision=fp32", "channels_last=false"], {}),
    "cudnn-v7-api": ColdStartVariant([], {"TORCH_CUDNN_V8_API_DISABLED": "1"}),
    "eager-module-loading": ColdStartVariant([], {"CUDA_MODULE_LOADING": "EAGER"}),
    "no-cudnn": ColdStartVariant([], {}, cudnn=False),
    "bf16-nchw": ColdStartVariant(["channels_last=false"], {}),
    "compile-model": ColdStartVariant(["compile=model"], {}),
    "compile-modules": ColdStartVariant(["compile=modules"], {}),
}


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float]] = []
    for key in ("no_cache", "cache", "cache_device_targets"):
        bars.append((f"data, {key.replace('_', ' ')}\n(samples/s)", results["data"][key]["samples_per_s"]))
    for device, model in results["model"].items():
        for batch, row in model["images_per_s"].items():
            for variant, value in row.items():
                bars.append((f"{device} forward\nbatch {batch}, {variant}", value))
    for batch, row in results.get("onnxruntime", {}).get("images_per_s", {}).items():
        bars.append((f"cpu forward\nbatch {batch}, onnxruntime", row["onnxruntime"]))
    bars.append(("train step\n(images/s)", results["train"]["images_per_s"]))
    fig, ax = plt.subplots(figsize=(1.4 * len(bars) + 2, 4), layout="constrained")
    ax.bar(range(len(bars)), [v for _, v in bars], color="#4c72b0")
    ax.set_xticks(range(len(bars)), [k for k, _ in bars], fontsize=8)
    ax.set_ylabel("per second")
    ax.set_title(f"hrnet_lib throughput on {results['hardware']}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_first_call(
    call: Callable[[], None], sync: Callable[[], None], device: torch.device, steps: int, rows: int
) -> dict:
    """The first call under the profiler, the median of `steps` later calls, then one more under the
    profiler: how much of each was the GPU's busy time, the ops with the most CPU time in the first call and
    the kernels with the most device time in a steady one."""
    first = profile_call(call, sync, device, rows)
    steady_s = statistics.median(timed_calls(call, sync, steps))
    steady = profile_call(call, sync, device, rows)
    return {
        "first_s": first["wall_s"],
        "first_device_busy_s": first["device_busy_s"],
        "top_ops": first["top_ops"],
        "steady_s": steady_s,
        "steady_profiled_s": steady["wall_s"],  # the call whose busy time and kernels these are
        "steady_device_busy_s": steady["device_busy_s"],
        "steady_top_kernels": steady["top_kernels"],
    }


def _fake_batch(cfg: TrainConfig, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """A loader-shaped batch of random images and keypoints: what is cold depends on shapes, not content."""
    generator = torch.Generator().manual_seed(seed)
    size = cfg.input_size
    return {
        "image": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator),
        "keypoints": torch.rand((batch, cfg.num_keypoints, 2), generator=generator) * size,
        "target_weight": torch.ones(batch, cfg.num_keypoints),
    }


def cold_start(cfg: TrainConfig, batch: int, steps: int = 3, rows: int = 12) -> dict[str, Any]:
    """Where this process's first training step and first validation pass spend their time.

    Times the setup (model to the device), then profiles the first training step (forward, backward, Adam),
    times `steps` more (median) and profiles one of them; the same for a validation pass (evaluation-mode
    forward under inference mode, decoding on the device); then the first training step at half the batch
    (`train_new_batch`, eager only): what a new shape costs a warm process. cuDNN building plans shows
    up as CPU time inside `aten::cudnn_convolution` or `aten::cudnn_batch_norm` and is paid again for the
    new shape; what is paid once a process (CUDA loading kernels lazily, library handles) is not.
    """
    device = resolve_device(cfg.device, option="device")
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    sync = device_sync(device)
    start = time.perf_counter()
    model = build_training_model(cfg, None, Runtime(0, 1, 0, device))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    net = compile_model(model, cfg.compile)  # compiles in the first step, as in training
    fake = _fake_batch(cfg, batch, seed=0)
    sync()
    size = cfg.input_size
    result: dict[str, Any] = {
        "device": hardware(device),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "batch": batch,
        "config": {
            "model": cfg.model,
            "input_size": size,
            "precision": resolve_precision(device, cfg.precision),
            "channels_last": cfg.channels_last,
            "cudnn_benchmark": cfg.cudnn_benchmark,
            "compile": cfg.compile,
        },
        "setup_s": time.perf_counter() - start,
    }

    def train_step(batches: list[dict[str, torch.Tensor]]) -> None:
        net.train()
        forward_backward(net, batches, cfg, device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    boxes = np.tile([[size / 2, size / 2]], (batch, 1))  # the crop is the whole random image

    @torch.compiler.set_stance("force_eager")  # as `validate` runs it
    def validation_pass() -> None:
        crops_to_landmarks(
            model,
            device,
            fake["image"],
            boxes,
            boxes * 2,
            size,
            cfg.heatmap_size,
            cfg.val_flip,
            precision=cfg.precision,
            channels_last=cfg.channels_last,
        )

    result["train"] = profile_first_call(lambda: train_step([fake]), sync, device, steps, rows)
    result["validation"] = profile_first_call(validation_pass, sync, device, steps, rows)
    result["train_new_batch"] = None  # a compiled network would compile again: that is not the question
    if cfg.compile == "off":
        half = [_fake_batch(cfg, max(1, batch // 2), seed=1)]
        first = profile_call(lambda: train_step(half), sync, device, rows)
        result["train_new_batch"] = {"batch": len(half[0]["image"]), **first}
    result["peak_memory_mb"] = memory_mb(device)
    return result


def run_cold_starts(preset: str, variants: list[str], batch: int | None, out: Path) -> dict[str, Any]:
    """`cold_start` of each named variant of `preset`, each in a fresh Python process."""
    unknown = [v for v in variants if v not in COLD_START_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown cold-start variants {unknown}; valid: {', '.join(COLD_START_VARIANTS)}")
    results: dict[str, Any] = {}
    for variant in variants:
        env = COLD_START_VARIANTS[variant].env
        command = [sys.executable, "-m", "hrnet_lib", "bench", "--cold-start-child", variant]
        command += ["--train-preset", preset, "--out", str(out)] + (["--batch", str(batch)] if batch else [])
        begin = time.perf_counter()
        quiet = {"KINETO_LOG_LEVEL": "5"}  # the profiler's own start/stop lines
        subprocess.run(command, env={**os.environ, **quiet, **env}, check=True)
        result = json.loads((out / f"cold_start_{variant}.json").read_text())
        result["process_wall_s"] = time.perf_counter() - begin  # includes importing torch and CUDA init
        results[variant] = result
    return results


def _cold_start_child(variant: str, preset: str, batch: int | None, out: Path) -> None:
    overrides, env, cudnn = COLD_START_VARIANTS[variant]
    torch.backends.cudnn.enabled = cudnn
    cfg = apply_overrides(get_preset(preset), overrides)
    result = cold_start(cfg, batch or cfg.per_device_batch or cfg.global_batch)
    result |= {"variant": variant, "preset": preset, "overrides": overrides}
    result["env"] = {key: os.environ.get(key) for key in env}
    save_json(result, out / f"cold_start_{variant}.json")


def _print_cold_starts(results: dict[str, Any]) -> None:
    """Each variant's times as a table (wall seconds and, after a slash, the GPU's busy seconds in the same
    call where known), then the ops with the most CPU time in the first calls and the kernels of a steady
    step."""

    def cell(wall: float, busy: float | None) -> str:
        return f"{wall:.2f}" + (f"/{busy:.2f}" if busy is not None else "")

    names = "process", "setup", "train 1st", "steady", "val 1st", "steady", "new batch 1st"
    print("seconds (wall/GPU busy); steady: one profiled call (unprofiled medians in cold_start.json)")
    print(f"{'variant':<22}" + "".join(f"{n:>15}" for n in names))
    for variant, r in results.items():
        cells = [f"{r['process_wall_s']:.1f}", f"{r['setup_s']:.1f}"]
        for part in (r["train"], r["validation"]):
            cells.append(cell(part["first_s"], part["first_device_busy_s"]))
            cells.append(cell(part["steady_profiled_s"], part["steady_device_busy_s"]))
        new_batch = r["train_new_batch"]
        cells.append(cell(new_batch["wall_s"], new_batch["device_busy_s"]) if new_batch else "-")
        print(f"{variant:<22}" + "".join(f"{c:>15}" for c in cells))
    for variant, r in results.items():
        for name in ("train", "validation"):
            ops = ", ".join(f"{o['op']} {o['self_cpu_s']:.2f}s" for o in r[name]["top_ops"][:4])
            print(f"{variant}, first {name} call, most CPU time: {ops}")
        kernels = ", ".join(
            f"{k['kernel'][:60]} {k['device_s']:.3f}s" for k in r["train"]["steady_top_kernels"][:4]
        )
        if kernels:
            print(f"{variant}, steady training step, most GPU time: {kernels}")


def model_flops_rate(cfg: TrainConfig, images_per_s: float, device: torch.device) -> dict[str, Any]:
    """Model TFLOP/s of training `cfg` at `images_per_s` (3 x the forward's FLOPs an image), the device's
    dense bf16 peak and the share of it (MFU); the peak and MFU are None for a CPU or an unknown GPU."""
    tflops = images_per_s * training_flops(cfg) / 1e12
    peak = dense_bf16_peak_tflops(hardware(device))
    return {
        "model_tflops_per_s": tflops,
        "dense_bf16_peak_tflops": peak,
        "mfu": tflops / peak if peak else None,
    }


def _sampled_loader(
    train_set: Any, micro: int, batches: int, cfg: TrainConfig, device: torch.device
) -> DataLoader:
    """A loader of `batches` random micro-batches of `train_set`, as training loads them."""
    # One pass of a sampler with replacement covers every step: no epoch ends, so a small
    # dataset does not drain and refill the workers' queue in the middle of the timed steps.
    sampler = RandomSampler(train_set, replacement=True, num_samples=batches * micro)
    return DataLoader(
        train_set,
        batch_size=micro,
        sampler=sampler,
        pin_memory=device.type == "cuda",
        **worker_options(cfg.workers),
    )


def _timed_steps(
    train_step: Callable[[list], None], batches: Any, accum: int, warmup: int, steps: int, sync: Callable
) -> tuple[float, float]:
    """Seconds of `steps` optimiser steps after `warmup` untimed ones, and the seconds of it spent
    waiting for the loader's micro-batches."""
    wait = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            wait, start = 0.0, time.perf_counter()
        fetch = time.perf_counter()
        micro_batches = [next(batches) for _ in range(accum)]
        wait += time.perf_counter() - fetch
        train_step(micro_batches)
    return time.perf_counter() - start, wait


def bench_train(
    cfg: TrainConfig | str,
    data_root: Path | str,
    device: str | None = None,
    steps: int = 10,
    warmup: int = 2,
    cache_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Training throughput of one process: images/s and the share of each step spent waiting for data.

    Runs `warmup` untimed then `steps` timed optimiser steps of `cfg` (a preset name or config; its
    global batch, micro-batches and accumulation as in training) on the TRAIN split of `data_root`.
    The face-crop cache (when `cfg.cache`) is built before timing, in `cache_dir` or a temporary folder.
    One more step runs under the profiler: on a GPU, `profiled_step_device_busy_s` of its
    `profiled_step_s` is kernel time, the rest the host's, and `top_kernels` says which kernels fill it.
    """
    cfg = get_preset(cfg) if isinstance(cfg, str) else cfg
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    rt = Runtime(0, 1, 0, resolve_device(cfg.device, option="device"))
    torch.set_flush_denormal(True)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    _, micro, accum = batch_sizes(cfg, 1)
    with tempfile.TemporaryDirectory() as tmp:
        train_set, _ = build_datasets(cfg, Path(data_root), Path(cache_dir or tmp), True)
        if len(train_set) < micro:
            raise TrainingError(f"{len(train_set)} training faces give no batch of {micro}")
        batches = iter(_sampled_loader(train_set, micro, (warmup + steps + 1) * accum, cfg, rt.device))
        model = build_training_model(cfg, None, rt)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        net = compile_model(model, cfg.compile)
        set_train_mode(net, cfg.freeze_bn)

        def train_step(micro_batches: list[dict[str, torch.Tensor]]) -> None:
            loss = forward_backward(net, micro_batches, cfg, rt.device)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # waits for the device

        sync = device_sync(rt.device)
        seconds, wait = _timed_steps(train_step, batches, accum, warmup, steps, sync)
        # One more step under the profiler: the GPU's busy share of a step, and the kernels that fill it.
        last = [next(batches) for _ in range(accum)]
        profiled = profile_call(lambda: train_step(last), sync, rt.device, rows=8)
    images = steps * accum * micro
    return {
        "device": torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "model": cfg.model,
        "input_size": cfg.input_size,
        "micro_batch": micro,
        "accumulation": accum,
        "precision": resolve_precision(rt.device, cfg.precision),
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "cache": cfg.cache,
        "workers": cfg.workers,
        "steps": steps,
        "images_per_s": images / seconds,
        "step_s": seconds / steps,
        "data_wait_share": wait / seconds,
        **model_flops_rate(cfg, images / seconds, rt.device),
        "peak_memory_mb": memory_mb(rt.device),
        "profiled_step_s": profiled["wall_s"],
        "profiled_step_device_busy_s": profiled["device_busy_s"],
        "top_kernels": profiled["top_kernels"],
    }


# The precision variants `bench_precisions` sets side by side: (precision, channels_last) of each.
PRECISION_VARIANTS: dict[str, tuple[str, bool]] = {
    "fp32_nchw": ("fp32", False),
    "fp32_channels_last": ("fp32", True),
    "bf16_channels_last": ("bf16", True),
}
# The training steps it times: the embedded default's, and the published model's on smaller crops.
PRECISION_TRAIN_STEPS: dict[str, tuple[str, list[str]]] = {
    "cpu-default": ("cpu-default", []),
    "hrnetv2_w18-128px": ("cpu-default", ["model=hrnetv2_w18", "input_size=128", "heatmap_size=32"]),
}


def _ratios(images_per_s: dict[str, float]) -> dict[str, float]:
    """Each variant's images/s over the first variant's (fp32 NCHW)."""
    base = next(iter(images_per_s.values()))
    return {name: value / base for name, value in images_per_s.items()}


def precision_train_steps(
    cfg: TrainConfig, data_root: Path, steps: int = 5, warmup: int = 2
) -> dict[str, Any]:
    """Training-step throughput of `cfg` in each of PRECISION_VARIANTS, on the same global batch of the
    TRAIN split of `data_root` (data loading excluded), the variants' steps interleaved so that load from
    other processes hits all of them alike; images/s from the median step."""
    device = resolve_device(cfg.device, option="device")
    torch.set_flush_denormal(True)
    _, micro, accum = batch_sizes(cfg, 1)
    one_batch = dataclasses.replace(cfg, cache=False, val_fraction=0.0, limit=micro * accum)
    train_set, _ = build_datasets(one_batch, Path(data_root), Path(data_root), True)
    if len(train_set) < micro * accum:
        raise TrainingError(f"{len(train_set)} training faces give no global batch of {micro * accum}")
    loader = iter(DataLoader(train_set, batch_size=micro, shuffle=False))
    batches = [next(loader) for _ in range(accum)]
    runs = {}
    for name, (precision, channels_last) in PRECISION_VARIANTS.items():
        variant = dataclasses.replace(cfg, precision=precision, channels_last=channels_last)
        model = build_training_model(variant, None, Runtime(0, 1, 0, device))  # the same seed for each
        runs[name] = (variant, model, torch.optim.Adam(model.parameters(), lr=cfg.lr))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(warmup + steps):
        for name, (variant, model, optimizer) in runs.items():
            begin = time.perf_counter()
            model.train()
            forward_backward(model, batches, variant, device).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= warmup:
                times[name].append(time.perf_counter() - begin)
    images_per_s = {name: cfg.global_batch / statistics.median(t) for name, t in times.items()}
    return {
        "model": cfg.model,
        "input_size": cfg.input_size,
        "global_batch": cfg.global_batch,
        "steps": steps,
        "step_s": {name: statistics.median(t) for name, t in times.items()},
        "images_per_s": images_per_s,
        "ratio": _ratios(images_per_s),
        "model_tflops_per_s": {k: v * training_flops(cfg) / 1e12 for k, v in images_per_s.items()},
    }


def precision_inference(
    name: str = "hrnetv2_w18", input_size: int = 256, batch: int = 8, iters: int = 5, device: str = "cpu"
) -> dict[str, Any]:
    """Inference throughput of `optimize_for_inference` copies of model `name` (conv+BN fused) in each of
    PRECISION_VARIANTS, interleaved; images/s from the median forward."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(name).to(dev)
    calibrate_batchnorm(model, torch.randn(2, 3, input_size, input_size, device=dev))
    copies = {
        variant: optimize_for_inference(model, channels_last, compile=False, precision=precision)
        for variant, (precision, channels_last) in PRECISION_VARIANTS.items()
    }
    x = torch.randn(batch, 3, input_size, input_size, device=dev)
    times = _time_variants({k: (v, x) for k, v in copies.items()}, iters, dev.type == "cuda")
    images_per_s = {k: batch / statistics.median(t) for k, t in times.items()}
    return {
        "model": name,
        "input_size": input_size,
        "batch": batch,
        "iters": iters,
        "images_per_s": images_per_s,
        "ratio": _ratios(images_per_s),
    }


def bench_precisions(data_root: Path, steps: int = 5) -> dict[str, Any]:
    """The CPU's precision variants side by side: training steps (PRECISION_TRAIN_STEPS) and HRNetV2-W18
    inference at 256 pixels in batches of 8, with what `precision=auto` chooses on this CPU."""
    cpu = torch.device("cpu")
    result: dict[str, Any] = {
        "device": hardware(cpu),
        "threads": torch.get_num_threads(),
        "cpu_bf16_native": cpu_bf16_native(),
        "auto_precision": resolve_precision(cpu, "auto"),
        "train": {},
    }
    for label, (preset, overrides) in PRECISION_TRAIN_STEPS.items():
        cfg = apply_overrides(get_preset(preset), ["device=cpu", "workers=0", *overrides])
        result["train"][label] = precision_train_steps(cfg, data_root, steps)
    result["inference"] = precision_inference(iters=steps)
    return result


def _print_precisions(results: dict[str, Any]) -> None:
    """The precision variants as a table: images/s and the ratio to fp32 NCHW."""
    rows = [(f"train {label}", r) for label, r in results["train"].items()]
    rows.append((f"inference {results['inference']['model']}", results["inference"]))
    print(f"CPU precision variants on {results['device']} (auto = {results['auto_precision']}): images/s")
    print(f"{'work':<30}" + "".join(f"{name:>22}" for name in PRECISION_VARIANTS))
    for label, r in rows:
        cells = "".join(
            f"{r['images_per_s'][name]:>14.1f} ({r['ratio'][name]:.2f}x)" for name in PRECISION_VARIANTS
        )
        print(f"{label:<30}{cells}")


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m hrnet_lib bench`."""
    parser = argparse.ArgumentParser(prog="python -m hrnet_lib bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument(
        "--data-root", type=Path, default=None, help="dataset to read (default: a synthetic one)"
    )
    parser.add_argument("--samples", type=int, default=200, help="samples per data-loading measurement")
    parser.add_argument("--train-preset", default="wflw-mmpose", help="configuration of the training step")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument(
        "--precision-steps", type=int, default=5, help="timed steps (and forwards) per CPU precision variant"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="on a GPU, also time torch.compile'd forward passes and compile the training step (minutes)",
    )
    parser.add_argument(
        "--cold-start",
        metavar="VARIANTS",
        help=f"only time the first steps of fresh processes of --train-preset, comma-separated variants of "
        f"{', '.join(COLD_START_VARIANTS)} (or 'all')",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="images a pass for --cold-start (default: the preset's)"
    )
    parser.add_argument("--cold-start-child", help=argparse.SUPPRESS)
    return parser


def bench_onnx_cpu() -> dict[str, Any]:
    """onnxruntime beside eager PyTorch and `optimize_for_inference` on the CPU (HRNetV2-W18, 256 px, batch
    1 and 8, as many threads as torch), or why it was not measured."""
    try:
        return bench_onnxruntime()
    except ImportError as error:
        return {"skipped": str(error)}


def measure(args: argparse.Namespace, cfg: TrainConfig) -> dict[str, Any]:
    """Throughput of data loading, the forward pass and the training step of `cfg` on this machine."""
    root = args.data_root or args.out / "synthetic"
    if args.data_root is None and not (root / "WFLW_annotations").is_dir():
        synthesize(root, n_train=args.samples, n_test=20, seed=0)

    results: dict[str, Any] = {
        "hardware": hardware("cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
    }
    cache_dir = args.out / "cache"
    results["data"] = {
        "no_cache": bench_loader(root, n=args.samples, cache=False),
        "cache": bench_loader(root, n=args.samples, cache=True, cache_dir=cache_dir),
        "cache_device_targets": bench_loader(
            root, n=args.samples, cache=True, cache_dir=cache_dir, device_targets=True
        ),
    }
    results["data"]["speedup"] = (
        results["data"]["cache"]["samples_per_s"] / results["data"]["no_cache"]["samples_per_s"]
    )
    results["model"] = {"cpu": bench_forward(device="cpu")}
    results["onnxruntime"] = bench_onnx_cpu()
    if torch.cuda.is_available():
        results["model"]["cuda"] = bench_forward(device="cuda", batch_sizes=(1, 64), compile=args.compile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = []
    if device == "cpu":
        # On a small CPU, compiling takes minutes, 8 workers compete with the compute and one step of the
        # 512-image global batch takes many minutes: measure the same model and input with steps of 16.
        overrides = ["compile=off", "workers=1", "global_batch=16", "per_device_batch=8"]
    elif args.compile:
        overrides = ["compile=model"]
    results["train"] = bench_train(
        apply_overrides(cfg, overrides), root, device=device, steps=args.train_steps
    )
    results["train"]["preset"] = args.train_preset
    results["train"]["overrides"] = overrides  # what differs from the preset in this measurement
    results["cpu_precision"] = bench_precisions(root, steps=args.precision_steps)

    return results


def main(argv: list[str]) -> int:
    """Entry point of `python -m hrnet_lib bench`; writes OUT/bench.json (or OUT/cold_start.json)."""
    args = build_parser().parse_args(argv)
    try:  # a bad name is an error now, not after minutes of data and model timing
        cfg = get_preset(args.train_preset)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    if args.cold_start_child:
        _cold_start_child(args.cold_start_child, args.train_preset, args.batch, args.out)
        return 0
    if args.cold_start:
        names = list(COLD_START_VARIANTS) if args.cold_start == "all" else args.cold_start.split(",")
        results = run_cold_starts(args.train_preset, names, args.batch, args.out)
        save_json(results, args.out / "cold_start.json")
        _print_cold_starts(results)
        print(f"wrote {args.out / 'cold_start.json'}")
        return 0
    results = measure(args, cfg)
    save_json(results, args.out / "bench.json")
    _plot(results, args.out / "bench.png")
    print(json.dumps(results, indent=2))
    _print_precisions(results["cpu_precision"])
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0
