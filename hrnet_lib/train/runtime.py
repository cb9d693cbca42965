"""Where a training process runs: torchrun's environment, its device and seeds, batch sizes, signals.

Under torchrun (WORLD_SIZE set) the run is distributed even with one process (NCCL or gloo, DDP, SyncBN
all active), so one GPU exercises the same code as eight.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hrnet_lib.device import memory_mb, resolve_device
from hrnet_lib.train.presets import ConfigError, TrainConfig


class TrainingError(RuntimeError):
    """A problem that stops training with a clear message (bad data root, NaN loss, ...)."""


class Interrupted(TrainingError):
    """The run stopped on SIGINT or SIGTERM after saving last.pt at a step boundary."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


class StopRequest:
    """SIGINT or SIGTERM while the loop runs asks it to stop after the current step and save last.pt there.

    Repeats change nothing: after Ctrl-C, torchrun also sends its workers SIGTERM (and SIGKILL 30 s later).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._request)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _request(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum


@dataclass
class Runtime:
    """Where this process runs: rank, world size and device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Pick the device (the GPU of LOCAL_RANK) and, when started by torchrun, join the process group."""
    try:
        want_cuda = resolve_device(cfg.device, option="device").type == "cuda"
    except ValueError as error:
        raise TrainingError(str(error)) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        if want_cuda:
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Runtime(rank, world, local_rank, device)


def seed_and_configure(cfg: TrainConfig) -> None:
    """Seed Python, NumPy and torch from `cfg.seed` and set the kernels' switches (determinism, TF32)."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    # HRNet's N(0, 0.001) initialisation drives activations towards subnormal floats, which are very slow
    # on CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with `freeze_bn`, BatchNorm layers stay in eval mode (fixed running statistics)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def batch_sizes(cfg: TrainConfig, world: int) -> tuple[int, int, int]:
    """(per-process images per step, micro-batch size, accumulation steps) for the global batch."""
    if cfg.global_batch % world:
        divisors = ", ".join(str(n) for n in range(1, 17) if cfg.global_batch % n == 0)
        below, above = cfg.global_batch // world * world, -(-cfg.global_batch // world) * world
        raise ConfigError(
            f"global_batch={cfg.global_batch} is not divisible by the world size {world}: run on a number "
            f"of processes that divides it ({divisors}, ...), or override global_batch="
            f"{f'{below} or ' if below else ''}{above} (another recipe: the learning rate is not rescaled)"
        )
    per_process = cfg.global_batch // world
    micro = cfg.per_device_batch or per_process
    if micro > per_process or per_process % micro:
        raise ConfigError(
            f"per_device_batch={micro} must divide the per-process share {per_process} "
            f"(global_batch={cfg.global_batch} over {world} processes); per_device_batch=none takes it whole"
        )
    return per_process, micro, per_process // micro


def out_of_memory_advice(micro: int, global_batch: int, device: torch.device) -> str:
    """What to change when a pass of `micro` images does not fit in `device`'s memory."""
    where = "this device"
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**20
        where = (
            f"{torch.cuda.get_device_name(device)} ({memory_mb(device):.0f} of {total:.0f} MiB used at peak)"
        )
    if micro == 1:
        return f"one image does not fit on {where}; use a smaller model or input_size"
    return (
        f"passes of {micro} images do not fit on {where}; set per_device_batch={micro // 2} "
        f"(gradient accumulation keeps the global batch at {global_batch})"
    )
