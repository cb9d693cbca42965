"""Inference copies, model summary and forward-speed measurement.

`optimize_for_inference` folds every BatchNorm into the convolution before it (BN in eval mode is an
affine map per channel, so the fold is exact up to rounding), switches to channels_last memory format
(faster oneDNN / cuDNN convolutions on both CPU and GPU, measured), runs under bf16 autocast where the
device computes bf16 natively (`device.resolve_precision`) and, on CUDA, compiles the model.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.flop_counter import FlopCounterMode

from hrnet_lib.device import autocast, resolve_precision
from hrnet_lib.model.hrnet import HighResolutionModule, HRNet, build_model


def fuse_conv_bn(module: nn.Module) -> int:
    """Fold BatchNorm layers into the preceding conv in place (module must be in eval mode).

    Pairs are found by the layout this package uses: consecutive (Conv2d, BatchNorm2d) entries of a
    Sequential, and attributes named convN / bnN of the same module. The BN is replaced by Identity.
    Returns the number of folded pairs.
    """
    if module.training:
        raise ValueError("fuse_conv_bn needs a module in eval mode (BN running statistics are folded)")
    count = 0
    for child in module.children():
        count += fuse_conv_bn(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
                count += 1
    for name, conv in list(module.named_children()):
        if name.startswith("conv") and isinstance(conv, nn.Conv2d):
            bn = getattr(module, "bn" + name[4:], None)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, "bn" + name[4:], nn.Identity())
                count += 1
    return count


class InferenceModel(nn.Module):
    """Wraps an optimised copy: feeds it input in its memory format, runs it in its precision ("bf16"
    autocast or "fp32"), returns contiguous fp32 heatmaps."""

    def __init__(self, model: nn.Module, channels_last: bool, compiled: bool, precision: str = "fp32"):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.compiled = compiled
        self.precision = precision
        self._forward = torch.compile(model) if compiled else model

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.precision):
            out = self._forward(x)
        return out.float().contiguous()


def optimize_for_inference(
    model: nn.Module, channels_last: bool | None = None, compile: bool | None = None, precision: str = "auto"
) -> InferenceModel:
    """A new, eval-mode copy of `model` for the fastest inference on the model's device.

    conv+BN fused always, channels_last by default (faster on CPUs and cuDNN's tensor cores alike; see
    MEASUREMENTS.md), `precision` as `device.resolve_precision` decides it for the device ("auto": bf16
    where it runs natively), torch.compile by default on CUDA only (CPU compilation takes minutes). In
    fp32, outputs equal the original model's in eval mode within 1e-4 relative; `model` is not changed.
    """
    device = next(model.parameters()).device
    precision = resolve_precision(device, precision)
    fast = copy.deepcopy(model).eval()
    fuse_conv_bn(fast)
    channels_last = True if channels_last is None else channels_last
    compile = device.type == "cuda" if compile is None else compile
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return InferenceModel(fast, channels_last=channels_last, compiled=compile, precision=precision).eval()


STAGES = ("stem", "stage1", "transition1", "stage2", "transition2", "stage3", "transition3", "stage4", "head")
_STAGE_MODULES = {
    "stem": ("conv1", "bn1", "conv2", "bn2"),
    "stage1": ("layer1",),
    "head": ("head",),
    **{f"transition{i}": (f"transition{i}",) for i in (1, 2, 3)},
    **{f"stage{i}": (f"stage{i}",) for i in (2, 3, 4)},
}


def model_summary(model: HRNet, input_size: int = 256) -> dict[str, Any]:
    """Parameters, FLOPs and feature-map shapes per stage for one (1, 3, S, S) image.

    FLOPs are counted by torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as 2
    FLOPs (convolutions and matmuls only). Papers, the HRNet one included ("4.3 GFLOPs" for W18 at 256),
    quote multiply-adds, so `gmacs` = FLOPs / 2 is the number to compare with them.
    Returns {"params": {stage: n, ..., "total": n}, "flops": {...}, "gmacs": {...}, "shapes": {stage:
    [per-branch (C, H, W)]}, "input_size": S, "output_shape": (K, h, w)}.
    """
    params = {
        stage: sum(p.numel() for name in names for p in getattr(model, name).parameters())
        for stage, names in _STAGE_MODULES.items()
    }
    params["total"] = sum(p.numel() for p in model.parameters())

    counter = FlopCounterMode(display=False)
    with counter:
        traced = dict(trace_shapes(model, input_size))
    shapes = {"stem": traced["conv2"], "stage1": traced["layer1"]}
    shapes |= {name: traced[name] for name in ("stage2", "stage3", "stage4", "concat", "head")}

    by_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    flops = {
        stage: sum(_flops_under(by_module, f"{root}.{n}") for n in names)
        for stage, names in _STAGE_MODULES.items()
    }
    flops["total"] = int(by_module.get("Global", 0))
    flops["other"] = flops["total"] - sum(flops[s] for s in STAGES)
    return {
        "input_size": input_size,
        "output_shape": traced["head"][0],
        "params": params,
        "flops": flops,
        "gmacs": {k: v / 2e9 for k, v in flops.items()},
        "shapes": shapes,
    }


def trace_shapes(model: HRNet, input_size: int = 256) -> list[tuple[str, list[tuple[int, ...]]]]:
    """One (1, 3, S, S) image traced through the network: (step, [(C, H, W) per branch]) in the order
    the forward pass reaches it, from the input through the stem, each transition (the input of the
    next stage) and stage, to the HRNetV2 concatenation and the heatmaps."""
    steps: list[tuple[str, list[tuple[int, ...]]]] = [("input", [(3, input_size, input_size)])]

    def shapes(value: Tensor | list[Tensor]) -> list[tuple[int, ...]]:
        return [tuple(v.shape[1:]) for v in (value if isinstance(value, (list, tuple)) else [value])]

    def after(name: str) -> Callable:
        return lambda _module, _inputs, output: steps.append((name, shapes(output)))

    def before(name: str) -> Callable:
        return lambda _module, inputs: steps.append((name, shapes(inputs[0])))

    hooks = [getattr(model, name).register_forward_hook(after(name)) for name in ("conv1", "conv2", "layer1")]
    for n in (2, 3, 4):
        stage = getattr(model, f"stage{n}")
        hooks += [stage.register_forward_pre_hook(before(f"transition{n - 1}"))]
        hooks += [stage.register_forward_hook(after(f"stage{n}"))]
    hooks += [
        model.head.register_forward_pre_hook(before("concat")),
        model.head.register_forward_hook(after("head")),
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return steps


def fuse_plan(module: HighResolutionModule) -> list[list[dict[str, Any]]]:
    """What each path of a module's fusion does, read from its layers: plan[i][j] says how input branch j
    reaches output branch i: {"kind": "identity" | "upsample" | "strided", "factor": resolution ratio,
    "convs": convolutions on the way, "channels": (in, out)}."""
    channels = module.out_channels
    plan = []
    for i, row in enumerate(module.fuse_layers):
        cells = []
        for j, layer in enumerate(row):
            convs = sum(isinstance(m, nn.Conv2d) for m in layer.modules())
            if isinstance(layer, nn.Identity):
                kind = "identity"
            elif any(isinstance(m, nn.Upsample) for m in layer.modules()):
                kind = "upsample"
            else:
                kind = "strided"
            cells.append(
                {
                    "kind": kind,
                    "factor": 2 ** abs(j - i),
                    "convs": convs,
                    "channels": (channels[j], channels[i]),
                }
            )
        plan.append(cells)
    return plan


@functools.lru_cache(maxsize=16)
def forward_flops(name: str, input_size: int, num_keypoints: int = 98, upsample: str = "bilinear") -> int:
    """FLOPs of one image's forward pass through model `name` (convolutions and matrix products, a
    multiply-add counted as 2, as in `model_summary`), counted on the meta device: no weights, no compute."""
    with torch.device("meta"):
        model = build_model(name, num_keypoints, upsample).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, input_size, input_size))
    return int(counter.get_total_flops())


def _flops_under(by_module: dict[str, int], prefix: str) -> int:
    """FLOPs of module `prefix`, or of its called children if it was never called itself (a ModuleList)."""
    if prefix in by_module:
        return int(by_module[prefix])
    children = [k for k in by_module if k.startswith(prefix + ".")]
    top = [k for k in children if not any(k.startswith(c + ".") for c in children)]
    return int(sum(by_module[k] for k in top))


def calibrate_batchnorm(model: nn.Module, images: Tensor) -> nn.Module:
    """Set BN running statistics to those of `images` (one train-mode pass, cumulative average).

    A freshly initialised HRNet (conv weights N(0, 0.001)) with default BN statistics shrinks activations
    by ~40x per conv in eval mode, until they become denormal floats, which are 10-100x slower on CPU.
    Trained weights never look like that, so speed measurements use calibrated statistics.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model.eval()


def _time_variants(
    variants: dict[str, tuple[Callable[[Tensor], Tensor], Tensor]], iters: int, sync: bool
) -> dict[str, list[float]]:
    """Seconds per forward for each variant, interleaved so that background load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn, x in variants.values():
            for _ in range(2):
                fn(x)
        if sync:
            torch.cuda.synchronize()
        for _ in range(iters):
            for name, (fn, x) in variants.items():
                start = time.perf_counter()
                fn(x)
                if sync:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    return times


def _bf16(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """`fn` run under bf16 autocast on its input's device."""

    def run(x: Tensor) -> Tensor:
        with autocast(x.device, "bf16"):
            return fn(x)

    return run


def bench_forward(
    batch_sizes: tuple[int, ...] = (1, 8),
    device: str = "cpu",
    iters: int = 5,
    input_size: int = 256,
    name: str = "hrnetv2_w18",
    compile: bool = False,
) -> dict[str, Any]:
    """Forward images/s of the plain eager model vs optimised copies, per batch size.

    Variants: "eager" (fp32, NCHW, unfused) and "fused" (optimize_for_inference in fp32: conv+BN fused,
    channels_last). CUDA adds "bf16_channels_last" (fused under bf16 autocast) and, with `compile`,
    "bf16_channels_last_compiled" (off by default: each batch size costs a compilation of a minute or more).
    Each variant is run `iters` times interleaved with the others; images/s uses the fastest run
    (least disturbed by other processes) and the median run is reported too.
    """
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(name).to(dev)
    calibrate_batchnorm(model, torch.randn(2, 3, input_size, input_size, device=dev))
    fused = optimize_for_inference(model, compile=False, precision="fp32")
    variants_by_name: dict[str, Callable[[Tensor], Tensor]] = {"eager": model, "fused": fused}
    if dev.type == "cuda":
        variants_by_name["bf16_channels_last"] = _bf16(fused)
        if compile:
            compiled = optimize_for_inference(model, compile=True, precision="fp32")
            variants_by_name["bf16_channels_last_compiled"] = _bf16(compiled)
    result: dict[str, Any] = {
        "model": name,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "input_size": input_size,
        "iters": iters,
        "compiled": compile and dev.type == "cuda",
        "images_per_s": {},
        "images_per_s_median": {},
        "speedup": {},
    }
    for bs in batch_sizes:
        x = torch.randn(bs, 3, input_size, input_size, device=dev)
        times = _time_variants({k: (v, x) for k, v in variants_by_name.items()}, iters, dev.type == "cuda")
        best = {k: bs / min(t) for k, t in times.items()}
        result["images_per_s"][bs] = best
        result["images_per_s_median"][bs] = {k: bs / statistics.median(t) for k, t in times.items()}
        result["speedup"][bs] = {k: v / best["eager"] for k, v in best.items() if k != "eager"}
    return result
