"""Training: one loop, read top to bottom, the same on one CPU and under `torchrun` on 8 GPUs.

    python -m hrnet_lib train --preset NAME --data-root DIR --out runs/NAME [--resume] [--pretrained PATH]
        [key=value ...]
    torchrun --nproc_per_node N -m hrnet_lib train ...   (DDP: NCCL on GPUs, gloo on CPU)

The global batch is a preset value, whatever the world size: each process takes global/world images a
step, in micro-batches with gradient accumulation when `per_device_batch` is smaller, so every global
batch is the same set of faces for 1 or 8 processes (`EpochSampler`). Each sample's augmentation comes from
its own RNG seeded by (seed, epoch, index) and the learning rate is a function of the step (`lr_at`), so
last.pt (weights, optimiser, position, RNG states) resumes a run exactly. bf16 autocast runs where the
device computes bf16 natively (`device.resolve_precision`: GPUs, CPUs with AMX or AVX-512 BF16); bf16 has
the range of fp32, so there is no gradient scaler. Validation runs every epoch on a held-out part of the
TRAIN split, never the test split; with `val_fraction=0` nothing is held out and best.pt is the latest
weights.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hrnet_lib.data.loader import device_batch, worker_options
from hrnet_lib.data.wflw import data_manifest
from hrnet_lib.device import autocast, dense_bf16_peak_tflops, resolve_precision
from hrnet_lib.io import NoSpaceError
from hrnet_lib.model.hrnet import HighResolutionModule, build_model
from hrnet_lib.model.weights import TRUST_FLAG, TRUST_HELP, WeightsMismatchError, load_weights
from hrnet_lib.provenance import git_commit, hardware
from hrnet_lib.train.checkpoint import rng_state, set_rng_state
from hrnet_lib.train.datasets import build_datasets, validation_batches
from hrnet_lib.train.presets import ConfigError, TrainConfig, apply_overrides, get_preset
from hrnet_lib.train.recipe import heatmap_loss, lr_at
from hrnet_lib.train.run_dir import RunDir, StepMeter, training_flops
from hrnet_lib.train.runtime import (
    Interrupted,
    Runtime,
    StopRequest,
    TrainingError,
    batch_sizes,
    out_of_memory_advice,
    seed_and_configure,
    set_train_mode,
    setup_runtime,
)
from hrnet_lib.train.sampler import EpochSampler
from hrnet_lib.train.validate import validate


@dataclass
class TrainState:
    """What last.pt holds: the weights, the optimiser, the position in the data and the best score."""

    model: nn.Module  # unwrapped: no SyncBN conversion pending, no compile, no DDP
    optimizer: torch.optim.Optimizer
    iteration: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_nme: float = math.inf

    def restore(self, checkpoint: dict[str, Any], rt: Runtime) -> None:
        """Continue from a full checkpoint; each process takes its own RNG state (the first's on a new
        world size)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.iteration, self.epoch = checkpoint["iteration"], checkpoint["epoch"]
        self.step_in_epoch, self.best_nme = checkpoint["step_in_epoch"], checkpoint["best_val_nme"]
        rngs = checkpoint["rng"]
        set_rng_state(rngs[rt.rank] if len(rngs) == rt.world else rngs[0])


def forward_backward(
    model: nn.Module, micro_batches: list[dict[str, Tensor]], cfg: TrainConfig, device: torch.device
) -> Tensor:
    """Accumulate gradients of the mean loss over `micro_batches`; DDP syncs only on the last one."""
    total = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        images, heatmaps, weights = device_batch(
            batch, device, cfg.input_size, cfg.heatmap_size, cfg.sigma, cfg.unbiased, cfg.channels_last
        )
        last = i == len(micro_batches) - 1
        accumulate = isinstance(model, DistributedDataParallel) and not last
        with model.no_sync() if accumulate else contextlib.nullcontext():
            with autocast(device, cfg.precision):
                pred = model(images)
            loss = heatmap_loss(pred, heatmaps, weights, cfg.loss) / len(micro_batches)
            loss.backward()
        total += loss.detach()
    return total


def build_training_model(
    cfg: TrainConfig, pretrained: Path | None, rt: Runtime, trust: bool = False
) -> nn.Module:
    """The model of `cfg`, initialised from the seed alone (and `pretrained`'s backbone, read as
    `read_checkpoint(pretrained, trust)` reads it), on the device."""
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(cfg.model, cfg.num_keypoints, cfg.upsample)
    except ValueError as error:
        raise TrainingError(str(error)) from error
    if pretrained is not None:
        try:  # strict: only what the layout explains may be missing (ImageNet weights: the head)
            report = load_weights(model, pretrained, trust=trust)
        except (WeightsMismatchError, ValueError, TypeError, OSError) as error:
            named = str(error).startswith(str(pretrained))  # most messages begin with the path
            raise TrainingError(
                f"--pretrained {error}" if named else f"--pretrained {pretrained}: {error}"
            ) from error
        if rt.main:
            print(f"pretrained weights from {pretrained}: {report}", flush=True)
    model.to(rt.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: nn.Module, how: str, backend: str = "inductor") -> nn.Module:
    """`model` as the `compile` setting says: "off" (as it is), "model" (one graph, in a wrapper) or
    "modules" (each HighResolutionModule compiled in place: identical modules reuse one graph)."""
    if how == "model":
        return torch.compile(model, backend=backend)
    if how == "modules":
        for module in model.modules():
            if isinstance(module, HighResolutionModule):
                module.compile(backend=backend)
    return model


def wrap_model(model: nn.Module, cfg: TrainConfig, rt: Runtime) -> tuple[nn.Module, nn.Module]:
    """(the model whose weights are saved, the one that trains): SyncBN, then compile, then DDP."""
    if cfg.sync_bn:
        if rt.device.type != "cuda":
            raise ConfigError("sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); use freeze_bn")
        if not dist.is_initialized():
            raise ConfigError("sync_bn needs a process group: start the run with torchrun")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = compile_model(model, cfg.compile)
    if dist.is_initialized():
        net = DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return model, net


def save_state(
    run: RunDir,
    path: Path,
    s: TrainState,
    cfg: TrainConfig,
    rt: Runtime,
    position: tuple[int, int],
    full: bool,
    val_nme: float | None = None,
) -> None:
    """Save a checkpoint at `position` (epoch, step in it) that rank 0 writes; a full one is collective,
    every rank adding its RNG state. Non-finite weights are never saved."""
    rngs = [rng_state()]
    if full and rt.world > 1:
        rngs = [None] * rt.world
        dist.all_gather_object(rngs, rng_state())
    if not bool(torch.stack([torch.isfinite(p).all() for p in s.model.parameters()]).all()):
        raise TrainingError(
            f"weights became non-finite at iteration {s.iteration}; not saved{run.kept_note()}"
        )
    if not rt.main:
        return
    state: dict[str, Any] = {
        "model": s.model.state_dict(),
        "config": cfg.to_dict(),
        "epoch": position[0],
        "step_in_epoch": position[1],
        "iteration": s.iteration,
        "val_nme": val_nme,
        "best_val_nme": s.best_nme,
    }
    if full:
        state.update(optimizer=s.optimizer.state_dict(), rng=rngs, world_size=rt.world)
    run.save(state, path)


def end_of_epoch(
    run: RunDir, s: TrainState, val_batches: list, cfg: TrainConfig, rt: Runtime, steps: int
) -> None:
    """At an epoch's end (or where max_iters stops inside one): validate (rank 0) and keep the best weights,
    save last.pt where training goes on, and move to the next epoch. Without a hold-out, best.pt is the
    latest weights."""
    ended = s.step_in_epoch == steps
    position = (s.epoch + 1, 0) if ended else (s.epoch, s.step_in_epoch)
    val_nme = math.nan
    if rt.main and not val_batches:
        save_state(run, run.best, s, cfg, rt, position, full=False)
    elif rt.main:
        start = time.perf_counter()
        val_nme = validate(s.model, val_batches, cfg, rt.device)
        set_train_mode(s.model, cfg.freeze_bn)
        improved, s.best_nme = val_nme < s.best_nme, min(s.best_nme, val_nme)
        seconds = time.perf_counter() - start
        record = {"iteration": s.iteration, "epoch": s.epoch, "val_nme": val_nme, "best_val_nme": s.best_nme}
        run.log({**record, "val_s": seconds})
        if improved:
            save_state(run, run.best, s, cfg, rt, position, full=False, val_nme=val_nme)
    save_state(run, run.last, s, cfg, rt, position, full=True, val_nme=val_nme)
    if ended:
        s.epoch, s.step_in_epoch = s.epoch + 1, 0
    if rt.world > 1:
        dist.barrier()


def optimizer_step(
    net: nn.Module,
    s: TrainState,
    micro_batches: list,
    lr: float,
    cfg: TrainConfig,
    rt: Runtime,
    stop: StopRequest,
) -> tuple[float, bool]:
    """One optimiser step at `lr` on this process's micro-batches; returns the loss averaged over the
    processes and whether any process was asked to stop (one all-reduce carries both)."""
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    try:
        loss = forward_backward(net, micro_batches, cfg, rt.device)
    except torch.cuda.OutOfMemoryError as error:
        advice = out_of_memory_advice(len(micro_batches[0]["image"]), cfg.global_batch, rt.device)
        raise TrainingError(f"out of memory in iteration {s.iteration}: {advice}") from error
    signalled = torch.tensor(float(stop.signum is not None), device=loss.device)
    shared = torch.stack([loss.detach().float(), signalled])
    if rt.world > 1:
        dist.all_reduce(shared)
        shared[0] /= rt.world
    loss_value, signals = shared.tolist()
    if not math.isfinite(loss_value):
        raise TrainingError(
            f"loss is {loss_value} at iteration {s.iteration} (epoch {s.epoch}, lr {lr:.3g}): "
            "training stopped before this update"
        )
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    return loss_value, signals > 0


def epoch_batches(loader: DataLoader, epoch: int, skip: int) -> Iterator[dict[str, Tensor]]:
    """Micro-batches of `epoch` after this process's first `skip` faces: order by (seed, epoch),
    augmentation by (seed, epoch, index). Worker processes start loading at once."""
    loader.sampler.set_epoch(epoch, skip=skip)
    loader.dataset.set_epoch(epoch)
    return iter(loader)


def training_data(
    cfg: TrainConfig, data_root: Path, cache_root: Path, rt: Runtime, micro: int
) -> tuple[DataLoader, list, int]:
    """The loader of this process's share of every global batch, the validation batches (rank 0) and the
    number of validation faces."""
    train_set, val_set = build_datasets(cfg, data_root, cache_root, rt.main)
    sampler = EpochSampler(len(train_set), cfg.global_batch, rt.world, rt.rank, cfg.seed)
    options = worker_options(cfg.workers)
    loader = DataLoader(train_set, micro, sampler=sampler, pin_memory=rt.device.type == "cuda", **options)
    if sampler.steps == 0:
        raise TrainingError(f"no training faces in {data_root} after the validation hold-out")
    return loader, validation_batches(val_set, cfg) if rt.main else [], len(val_set)


def run_info(cfg: TrainConfig, rt: Runtime, command: list[str] | None, data_root: Path, **sizes: int) -> dict:
    """config.json's description of this session: config, command, commit, data checksum, hardware, the
    precision and memory format that ran, and the model FLOPs of a training image with the device's dense
    bf16 peak (None where the device is not in `DENSE_BF16_PEAK_TFLOPS`)."""
    return {
        "config": cfg.to_dict(),
        "command": command,
        "commit": git_commit(),
        "data_root": str(data_root.resolve()),
        "data_manifest_sha256": data_manifest(data_root),
        "world_size": rt.world,
        "device": hardware(rt.device),
        "precision": resolve_precision(rt.device, cfg.precision),
        "memory_format": "channels_last" if cfg.channels_last else "contiguous",
        "train_flops_per_image": training_flops(cfg),
        "dense_bf16_peak_tflops": dense_bf16_peak_tflops(hardware(rt.device)),
        "torch": torch.__version__,
        **sizes,
    }


def train(
    cfg: TrainConfig,
    data_root: Path,
    out: Path,
    resume: bool = False,
    pretrained: Path | None = None,
    cache_dir: Path | None = None,
    command: list[str] | None = None,
    trust: bool = False,
) -> int:
    """Train `cfg` on `data_root` into the run folder `out`; returns 0 when done, 1 when stopped by an
    error (NaN loss, out of memory), 128 + the signal after SIGINT or SIGTERM; `command` is recorded.
    The folder is held by this run (rank 0) until it returns; `trust` is for `pretrained` (see
    `read_checkpoint`)."""
    data_root, out = Path(data_root), Path(out)
    if data_root.is_file():
        raise TrainingError(f"--data-root {data_root} is a file; name the WFLW root folder")
    if not data_root.is_dir():
        raise TrainingError(f"data root {data_root} does not exist")
    if pretrained is not None and not Path(pretrained).is_file():
        raise TrainingError(f"--pretrained {pretrained}: no such file")
    run = RunDir(out)
    try:  # rank 0 holds the folder from before its first write until the run ends
        resume = run.prepare(resume, lock=int(os.environ.get("RANK", "0")) == 0)
        return train_in(
            run, cfg, data_root, resume, pretrained if not resume else None, cache_dir, command, trust
        )
    finally:
        run.release()


def train_in(
    run: RunDir,
    cfg: TrainConfig,
    data_root: Path,
    resume: bool,
    pretrained: Path | None,
    cache_dir: Path | None,
    command: list[str] | None,
    trust: bool,
) -> int:
    """`train` in a prepared run folder: data, model and optimiser (from `pretrained`, or where last.pt left
    them), then `fit`; a finished run given `--resume` is left as it is."""
    rt = setup_runtime(cfg)
    seed_and_configure(cfg)
    per_process, micro, accum = batch_sizes(cfg, rt.world)
    cache_root = cache_dir or run.out.parent / ".crop-cache"
    loader, val_batches, val_faces = training_data(cfg, data_root, cache_root, rt, micro)
    steps = loader.sampler.steps  # per epoch
    total = min(steps * cfg.epochs, cfg.max_iters or steps * cfg.epochs)

    # Model and optimiser: from the seed (and a pretrained backbone), or where last.pt left them.
    model = build_training_model(cfg, pretrained, rt, trust)
    s = TrainState(model, torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay))
    if resume:
        s.restore(run.read_last(cfg, data_root), rt)
        if s.iteration >= total:
            if rt.main:
                run.report_finished(s.iteration, total, cfg)
            return 0
        run.check_best()
    s.model, net = wrap_model(model, cfg, rt)
    if rt.main:
        faces = dict(train_faces=len(loader.dataset), val_faces=val_faces, iters_per_epoch=steps)
        info = run_info(cfg, rt, command, data_root, **faces, total_iters=total, micro_batch=micro)
        run.start_session({**info, "accumulation": accum}, resume, s.iteration)
        held_out = f"{val_faces} held out for validation" if val_faces else "no validation hold-out"
        print(
            f"training {cfg.model} on {len(loader.dataset)} faces ({held_out}), {rt.world} process(es) on "
            f"{rt.device.type} in {info['precision']}, global batch {cfg.global_batch} = {rt.world} x "
            f"{accum} x {micro}, {steps} steps/epoch, {total} steps",
            flush=True,
        )
    return fit(run, s, net, loader, val_batches, cfg, rt, total, accum)


def fit(
    run: RunDir,
    s: TrainState,
    net: nn.Module,
    loader: DataLoader,
    val_batches: list,
    cfg: TrainConfig,
    rt: Runtime,
    total: int,
    accum: int,
) -> int:
    """The training loop: optimiser steps up to `total`, logging, checkpoints, validation at each epoch's
    end; returns the exit status of `train`."""
    steps, per_process = loader.sampler.steps, loader.batch_size * accum
    bar = tqdm(
        total=total, initial=s.iteration, desc="train", unit="step", disable=not rt.main, mininterval=1
    )
    meter = StepMeter(training_flops(cfg), dense_bf16_peak_tflops(hardware(rt.device)))
    stop = StopRequest()
    setup_s = meter.start - run.started
    set_train_mode(net, cfg.freeze_bn)
    stop.install()  # before the workers start: a signal from now on stops after a step, with last.pt saved
    batches = epoch_batches(loader, s.epoch, s.step_in_epoch * per_process)
    try:
        while s.iteration < total:
            wait = time.perf_counter()
            micro_batches = [next(batches) for _ in range(accum)]
            wait = time.perf_counter() - wait
            lr = lr_at(s.iteration, steps, cfg)
            try:
                loss, stop_now = optimizer_step(net, s, micro_batches, lr, cfg, rt, stop)
            except TrainingError as error:
                raise TrainingError(f"{error}{run.kept_note()}") from error
            s.iteration, s.step_in_epoch = s.iteration + 1, s.step_in_epoch + 1
            bar.update(1)
            meter.add(loss, wait)
            # The first step (the cold start) is logged alone, so later windows measure the steady state.
            if s.iteration % cfg.log_every == 0 or s.iteration in (1, total):
                bar.set_postfix(loss=f"{meter.loss / meter.steps:.3g}", lr=f"{lr:.2g}")
                run.log({"iteration": s.iteration, "epoch": s.epoch, "lr": lr, **meter.record(cfg, rt)})
                meter.reset()
            if stop_now:
                save_state(run, run.last, s, cfg, rt, (s.epoch, s.step_in_epoch), full=True)
                raise interrupted(stop, s.iteration, total, run.last)
            if cfg.ckpt_every and s.iteration % cfg.ckpt_every == 0 and s.step_in_epoch < steps:
                save_state(run, run.last, s, cfg, rt, (s.epoch, s.step_in_epoch), full=True)
            if s.step_in_epoch == steps or s.iteration == total:  # an epoch's end, or max_iters inside one
                pause = time.perf_counter()
                if s.step_in_epoch == steps and s.iteration < total:  # workers load while rank 0 validates
                    batches = epoch_batches(loader, s.epoch + 1, 0)
                end_of_epoch(run, s, val_batches, cfg, rt, steps)
                meter.start += time.perf_counter() - pause  # throughput excludes validation
    except TrainingError as error:
        if rt.main:
            bar.close()
            print(
                f"{'stopped' if isinstance(error, Interrupted) else 'error'}: {error}",
                file=sys.stderr,
                flush=True,
            )
        return error.exit_code if isinstance(error, Interrupted) else 1
    finally:
        stop.restore()
        bar.close()
        run.close()
    if rt.main:
        run.finish(s.iteration, s.epoch, s.best_nme, setup_s, bool(val_batches))
    return 0


def interrupted(stop: StopRequest, iteration: int, total: int, last: Path) -> Interrupted:
    """The error that ends a run stopped by a signal, after last.pt was saved at its step."""
    signum = stop.signum or signal.SIGTERM  # another process may have been the one signalled
    return Interrupted(
        f"{signal.Signals(signum).name} after iteration {iteration} of {total}; "
        f"{last} holds it: run the same command with --resume to continue",
        signum,
    )


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, TrainConfig]:
    """The command-line options and the preset with its `key=value` overrides applied."""
    parser = argparse.ArgumentParser(prog="python -m hrnet_lib train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="cpu-default, smoke, wflw-1gpu or wflw-mmpose")
    parser.add_argument("--data-root", required=True, type=Path, help="WFLW root (official layout)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, logs, config)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--pretrained", type=Path, help="ImageNet backbone weights (head keeps its init)")
    parser.add_argument("--cache-dir", type=Path, help="face-crop cache folder (default: OUT/../.crop-cache)")
    parser.add_argument(TRUST_FLAG, action="store_true", help=f"for --pretrained: {TRUST_HELP}")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override preset fields")
    args = parser.parse_intermixed_args(argv)
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m hrnet_lib train`; returns the exit status (0 ok, 1 stopped, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, cfg = parse_args(argv)
        code = train(
            cfg,
            args.data_root,
            args.out,
            args.resume,
            args.pretrained,
            args.cache_dir,
            command=argv,
            trust=args.trust_checkpoint,
        )
    except (ConfigError, TrainingError, NoSpaceError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        code = 2 if isinstance(error, ConfigError) else 1
    except KeyboardInterrupt:  # before the loop started (data, cache, model): nothing to save yet
        print("interrupted before training started; nothing was saved", file=sys.stderr, flush=True)
        code = 130
    if dist.is_initialized():
        # gloo can abort during interpreter shutdown after the work is done: leave the group, flush, exit.
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
