"""Training: one loop, read top to bottom, the same on one CPU and under `torchrun` on 8 GPUs.

    python -m hrnet_lib train --preset NAME --data-root DIR --out runs/NAME [--resume] [--pretrained PATH]
        [key=value ...]
    torchrun --nproc_per_node N -m hrnet_lib train ...   (DDP: NCCL on GPUs, gloo on CPU)

The global batch is a preset value, whatever the world size: each process takes global/world images a
step, split into micro-batches with gradient accumulation when `per_device_batch` is smaller. The
sampler shuffles by (seed, epoch), pads the epoch to whole global batches (no face is left out, as in
mmpose) and deals the order out to the processes, so each global batch is the
same set of faces for 1 or 8 processes, and resuming skips the finished steps of an epoch without
loading them. Each sample's augmentation comes from its own RNG seeded by (seed, epoch, index)
(hrnet_lib.data.loader), so a resumed run sees exactly the data of an uninterrupted one. The learning
rate is a function of the iteration (`lr_at`), so the schedule has no state to save, and bf16 autocast
has the range of fp32, so there is no gradient scaler (fp16 would need one): last.pt holds the weights,
the optimiser, the position and every process's RNG states.

Validation runs every epoch on a held-out part of the TRAIN split (whole images; never the test split).
With `val_fraction=0` nothing is held out and nothing validated (mmpose's step count: every training face,
15 steps of 512 an epoch on WFLW), and best.pt is the weights of the latest epoch, so the final weights are
the ones evaluated: the choice that a protocol without a validation set leaves, short of the test set.
Run folder: best.pt (lowest validation NME, or the latest epoch without a hold-out), last.pt (full
training state; `--resume` continues from it, or starts a new run when there is none), config.json,
log.jsonl (one JSON record per `log_every` steps and per validation, each with `elapsed_s`, the seconds
since this session started, so even a run cut short gives its timeline), and summary.json once the run is
complete (its speed, and where the session's time went: setup, first step, validation, checkpoints). Rank
0 alone logs, shows progress and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, Sampler
from tqdm import tqdm

from hrnet_lib.data.loader import device_batch, normalize_images, worker_options
from hrnet_lib.io import atomic_bytes, jsonl_text, prepare_output, read_json, read_jsonl, save_json
from hrnet_lib.provenance import git_commit, hardware
from hrnet_lib.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from hrnet_lib.train.presets import ConfigError, TrainConfig, apply_overrides, get_preset

# Config keys that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {
    "workers",
    "log_every",
    "ckpt_every",
    "max_iters",
    "compile",
    "cudnn_benchmark",
    "val_batch",
    "epochs",
}


class TrainingError(RuntimeError):
    """A problem that stops training with a clear message (bad data root, NaN loss, ...)."""


class Interrupted(TrainingError):
    """The run stopped on SIGINT or SIGTERM after saving last.pt at a step boundary."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


class StopRequest:
    """SIGINT or SIGTERM (Ctrl-C, a scheduler's preemption) while the loop runs asks it to stop after the
    current step and save last.pt there. Repeats change nothing: after Ctrl-C, torchrun also sends its
    workers SIGTERM, and gives them 30 s before SIGKILL."""

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


# ----------------------------------------------------------------------------------------------------
# The recipe: learning-rate schedule and loss


def lr_at(iteration: int, iters_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step `iteration` (0-based), mmpose's schedule.

    Step decay by epoch: lr x gamma for every milestone epoch reached (epoch = iteration // iters_per_epoch,
    0-based, so x0.1 from the first step of epoch 40). Linear warm-up on top for the first `warmup_iters`
    steps: lr * (ratio + (1 - ratio) * iteration / warmup_iters).
    """
    epoch = iteration // iters_per_epoch
    lr = cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if iteration < cfg.warmup_iters:
        lr *= cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * iteration / cfg.warmup_iters
    return lr


def heatmap_loss(pred: Tensor, target: Tensor, weight: Tensor, kind: str = "mse") -> Tensor:
    """The training loss of `kind`, mean over all heatmap pixels, with per-keypoint target weights w.

    "mse": mmpose's JointsMSELoss, the mean of ((pred - gt) * w)^2 (mmpose averages the per-keypoint MSE of
    pred*w against gt*w over keypoints, which is this mean; the 0.5 factor of the original HRNet code is
    not in mmpose). "awing": mmpose's AdaptiveWingLoss with its defaults, `adaptive_wing(pred*w, gt*w)`
    (its published WFLW row: 4.02).
    """
    w = weight[:, :, None, None]
    if kind == "awing":
        return adaptive_wing(pred.float() * w, target * w).mean()
    return ((pred.float() - target) * w).pow(2).mean()


def adaptive_wing(
    pred: Tensor,
    target: Tensor,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> Tensor:
    """Adaptive Wing loss of each heatmap pixel (Wang et al., ICCV 2019), with mmpose's default constants.

    For the error d = |gt - pred| and the exponent p = alpha - gt: omega * ln(1 + (d / epsilon)^p) below
    theta, and the tangent line A * d - C of that curve at d = theta above it, so the loss and its slope are
    continuous. Near a peak (gt about 1, p about 1.1) small errors still have a steep gradient, where MSE's
    vanishes; in the background (gt = 0, p = 2.1) it behaves like MSE.
    """
    delta = (target - pred).abs()
    power = alpha - target
    ratio = theta / epsilon
    slope = omega / (1 + ratio**power) * power * ratio ** (power - 1) / epsilon
    offset = theta * slope - omega * torch.log1p(ratio**power)
    return torch.where(delta < theta, omega * torch.log1p((delta / epsilon) ** power), slope * delta - offset)


# ----------------------------------------------------------------------------------------------------
# Data


def split_train_val(faces: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split of the TRAIN faces into (train, val) by whole images, about `fraction` for val.

    Faces of one image stay together, so no photo is seen both in training and validation.
    """
    images = sorted({face.image for face in faces})
    order = np.random.default_rng(seed).permutation(len(images))
    target = round(fraction * len(faces))
    per_image: dict[str, int] = {}
    for face in faces:
        per_image[face.image] = per_image.get(face.image, 0) + 1
    val_images: set[str] = set()
    count = 0
    for i in order:
        if count >= target:
            break
        val_images.add(images[i])
        count += per_image[images[i]]
    train = [f for f in faces if f.image not in val_images]
    val = [f for f in faces if f.image in val_images]
    return train, val


class EpochSampler(Sampler[int]):
    """This process's share of every global batch of an epoch; can start mid-epoch.

    An epoch is a permutation of the training faces seeded by (seed + epoch), as DistributedSampler draws
    it, padded to whole global batches by repeating its start: like mmpose, which keeps the last, short
    batch instead of dropping it, every face is seen every epoch, and padding keeps every step's input
    shape (a new shape costs a GPU a cold start). Global batch i is `order[i*G:(i+1)*G]`; process r takes
    every world-th face of the order from the r-th, so its images of step i are its share of global batch
    i for any world size that divides G (`batch_sizes` checks that). `set_epoch(epoch, skip)` skips this
    process's first `skip` indices (the steps already done) without loading them.
    """

    def __init__(self, size: int, global_batch: int, world: int, rank: int, seed: int) -> None:
        self.size, self.global_batch, self.world, self.rank, self.seed = size, global_batch, world, rank, seed
        self.steps = math.ceil(size / global_batch)  # steps per epoch
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        """The epoch's face order over all processes: the permutation, padded to `steps` global batches."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        permutation = torch.randperm(self.size, generator=generator).tolist()
        total = self.steps * self.global_batch
        return (permutation * math.ceil(total / max(self.size, 1)))[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.rank :: self.world][self.skip :])

    def __len__(self) -> int:
        return self.steps * self.global_batch // self.world - self.skip


def data_manifest(root: Path) -> str:
    """SHA-256 over the annotation files (relative path and bytes), identifying the data a run used."""
    from hrnet_lib.data.wflw import ANNOTATION_DIR

    digest = hashlib.sha256()
    base = root / ANNOTATION_DIR
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_faces(data_root: Path, cfg: TrainConfig) -> tuple[list, list]:
    """Train and validation faces of the TRAIN split (no validation faces when `cfg.val_fraction` is 0);
    `TrainingError` naming what is missing or wrong."""
    from hrnet_lib.data.wflw import WFLWFormatError, annotation_path, load_split

    path = annotation_path(data_root, "train")
    if not path.is_file():
        raise TrainingError(
            f"no WFLW training annotations at {path}: --data-root must be a WFLW root "
            f"(run `python -m hrnet_lib synth --root DIR` or `make data`)"
        )
    try:
        faces = load_split(data_root, "train")
    except (WFLWFormatError, FileNotFoundError) as error:
        raise TrainingError(str(error)) from error
    if cfg.limit:
        faces = faces[: cfg.limit]
    if cfg.val_fraction == 0:
        return faces, []
    train, val = split_train_val(faces, cfg.val_fraction, cfg.seed)
    if not val:
        raise TrainingError(
            f"val_fraction={cfg.val_fraction} leaves no validation faces out of {len(faces)} "
            "(val_fraction=0 trains on all of them without validation)"
        )
    return train, val


def build_datasets(
    cfg: TrainConfig, data_root: Path, cache_root: Path, main_process: bool
) -> tuple[Any, Any]:
    """Training (augmented) and validation datasets, with face-crop caches built once by rank 0."""
    from hrnet_lib.data.loader import FaceCropCache, WFLWDataset, faces_digest
    from hrnet_lib.data.transforms import Augment
    from hrnet_lib.data.wflw import IMAGE_DIR

    train_faces, val_faces = load_faces(data_root, cfg)
    image_root = data_root / IMAGE_DIR
    augment = Augment(
        cfg.flip_prob, cfg.scale_sigma, cfg.scale_range, cfg.rot_sigma, cfg.rot_max, cfg.rot_prob
    )
    caches: list[Any] = [None, None]
    if cfg.cache:
        for i, faces in enumerate((train_faces, val_faces)):
            if not faces:
                continue
            directory = cache_root / f"crops-{cfg.input_size}-{faces_digest(faces)[:16]}"
            if main_process:  # rank 0 builds, the others open what it built
                FaceCropCache(directory, faces, image_root, cfg.input_size, max_scale=cfg.scale_range[1])
            if dist.is_initialized():
                dist.barrier()
            caches[i] = FaceCropCache(
                directory, faces, image_root, cfg.input_size, max_scale=cfg.scale_range[1]
            )
    common = dict(
        input_size=cfg.input_size,
        heatmap_size=cfg.heatmap_size,
        sigma=cfg.sigma,
        unbiased=cfg.unbiased,
        seed=cfg.seed,
        device_targets=True,  # uint8 crops + keypoints; `device_batch` normalises and encodes on the device
    )
    train_set = WFLWDataset(train_faces, image_root, train=True, augment=augment, cache=caches[0], **common)
    val_set = WFLWDataset(val_faces, image_root, train=False, cache=caches[1], **common)
    return train_set, val_set


# ----------------------------------------------------------------------------------------------------
# Validation


def validation_batches(val_set: Any, cfg: TrainConfig) -> list[dict[str, Tensor]]:
    """The validation faces as batches of `cfg.val_batch`, loaded once and kept in host memory.

    Validation crops are fixed (no augmentation), so each epoch reuses them instead of loading them again;
    with WFLW's 375 held-out faces at 256 pixels that is 74 MB of uint8 crops.
    """
    return list(DataLoader(val_set, batch_size=cfg.val_batch, shuffle=False))


@torch.no_grad()
def validate(
    model: nn.Module, batches: Iterable[dict[str, Tensor]], cfg: TrainConfig, device: torch.device
) -> float:
    """Mean inter-ocular NME (fraction) of `model` over `batches`: decode, then back to image pixels.

    A batch shorter than `cfg.val_batch` is padded to it, so every call runs the same input shape: on a
    GPU a new input shape costs cuDNN a new algorithm search (with `wflw-1gpu` on an H200, commit 64339bb,
    the first validation took 0.31 s, later ones 0.18-0.20 s).
    Heatmaps are decoded where they are computed; only keypoints come back to the host.
    """
    from hrnet_lib.evaluate.decode import decode_heatmaps, predict_heatmaps, to_image_pixels
    from hrnet_lib.evaluate.metrics import nme

    errors = []
    for batch in batches:
        images = normalize_images(batch["image"].to(device, non_blocking=True))
        count = len(images)
        if count < cfg.val_batch:
            images = torch.cat([images, images.new_zeros((cfg.val_batch - count, *images.shape[1:]))])
        if device.type == "cuda" and cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg):
            heatmaps = predict_heatmaps(model, images, flip=cfg.val_flip)[:count]
        keypoints = decode_heatmaps(heatmaps, "dark" if cfg.unbiased else "standard")[0].cpu().numpy()
        pred = to_image_pixels(
            keypoints,
            batch["center"].numpy(),
            batch["scale"].numpy(),
            cfg.input_size,
            cfg.heatmap_size,
            batch["rotation"].numpy(),
        )
        errors.append(nme(pred, batch["landmarks"].numpy().astype(np.float64)))
    return float(np.concatenate(errors).mean())


# ----------------------------------------------------------------------------------------------------
# Devices, processes, one optimiser step


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
    """Pick the device and, when started by torchrun (WORLD_SIZE set), join the process group.

    Under torchrun the run is distributed even with one process (NCCL, DDP, SyncBN all active), so one GPU
    exercises the same code as eight.
    """
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise TrainingError("device=cuda requested but no CUDA device is available")
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


def autocast(device: torch.device, cfg: TrainConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; nothing otherwise (CPU runs in fp32)."""
    if device.type == "cuda" and cfg.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def forward_backward(
    model: nn.Module, micro_batches: list[dict[str, Tensor]], cfg: TrainConfig, device: torch.device
) -> Tensor:
    """Accumulate gradients of the mean loss over `micro_batches`; DDP syncs only on the last one."""
    total = torch.zeros((), device=device)
    channels_last = device.type == "cuda" and cfg.channels_last
    for i, batch in enumerate(micro_batches):
        images, heatmaps, weights = device_batch(
            batch, device, cfg.input_size, cfg.heatmap_size, cfg.sigma, cfg.unbiased, channels_last
        )
        last = i == len(micro_batches) - 1
        accumulate = isinstance(model, DistributedDataParallel) and not last
        with model.no_sync() if accumulate else contextlib.nullcontext():
            with autocast(device, cfg):
                pred = model(images)
            loss = heatmap_loss(pred, heatmaps, weights, cfg.loss) / len(micro_batches)
            loss.backward()
        total += loss.detach()
    return total


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


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, TrainConfig]:
    """The command-line options and the preset with its `key=value` overrides applied."""
    parser = argparse.ArgumentParser(prog="python -m hrnet_lib train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="cpu-default, smoke, wflw-1gpu or wflw-mmpose")
    parser.add_argument("--data-root", required=True, type=Path, help="WFLW root (official layout)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, logs, config)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--pretrained", type=Path, help="ImageNet backbone weights (head keeps its init)")
    parser.add_argument("--cache-dir", type=Path, help="face-crop cache folder (default: OUT/../.crop-cache)")
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
            cfg, args.data_root, args.out, args.resume, args.pretrained, args.cache_dir, command=argv
        )
    except (ConfigError, TrainingError) as error:
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


def train(
    cfg: TrainConfig,
    data_root: Path,
    out: Path,
    resume: bool = False,
    pretrained: Path | None = None,
    cache_dir: Path | None = None,
    command: list[str] | None = None,
) -> int:
    """Train `cfg` on `data_root` into the run folder `out`; returns 0 when done, 1 when stopped (NaN loss).

    `command` (the command-line arguments) is recorded in RUN/config.json.
    """
    data_root, out = Path(data_root), Path(out)
    if not data_root.is_dir():
        raise TrainingError(f"data root {data_root} does not exist")
    if pretrained is not None and not Path(pretrained).is_file():
        raise TrainingError(f"--pretrained {pretrained}: no such file")
    try:  # before the data and cache work, a run folder that cannot be written is an error
        prepare_output(out / "config.json")
    except ValueError as error:
        raise TrainingError(str(error)) from None
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.jsonl"
    if resume and not last_path.is_file():
        print(f"--resume: no checkpoint at {last_path}, starting a new run", flush=True)
        resume = False
    elif not resume and last_path.exists():
        raise TrainingError(f"{out} already holds a run ({last_path}); pass --resume or choose another --out")

    started = time.perf_counter()
    rt = setup_runtime(cfg)
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
    # on CPUs; flushing them to zero changes nothing measurable and keeps CPU training at full speed.
    torch.set_flush_denormal(True)
    per_process, micro, accum = batch_sizes(cfg, rt.world)

    # Data: train/val split of the TRAIN faces; the sampler gives each process its share of every batch.
    train_set, val_set = build_datasets(cfg, data_root, cache_dir or out.parent / ".crop-cache", rt.main)
    sampler = EpochSampler(len(train_set), cfg.global_batch, rt.world, rt.rank, cfg.seed)
    loader_args: dict[str, Any] = dict(pin_memory=rt.device.type == "cuda", **worker_options(cfg.workers))
    train_loader = DataLoader(train_set, batch_size=micro, sampler=sampler, **loader_args)
    val_batches = validation_batches(val_set, cfg) if rt.main else []
    iters_per_epoch = sampler.steps
    if iters_per_epoch == 0:
        raise TrainingError(f"no training faces in {data_root} after the validation hold-out")
    total_iters = iters_per_epoch * cfg.epochs
    if cfg.max_iters:
        total_iters = min(total_iters, cfg.max_iters)

    # Model and optimiser.
    from hrnet_lib.model.hrnet import build_model

    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    try:
        model = build_model(cfg.model, cfg.num_keypoints, cfg.upsample)
    except ValueError as error:
        raise TrainingError(str(error)) from error
    if pretrained is not None and not resume:
        from hrnet_lib.model.weights import WeightsMismatchError, load_weights

        try:  # strict: only what the layout explains may be missing (ImageNet weights: the head)
            report = load_weights(model, pretrained)
        except (WeightsMismatchError, ValueError, TypeError, OSError) as error:
            raise TrainingError(f"--pretrained {pretrained}: {error}") from error
        if rt.main:
            print(f"pretrained weights from {pretrained}: {report}", flush=True)
    model.to(rt.device)
    if rt.device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # Resume: weights, optimiser, position in the data, best score, RNG states.
    iteration, epoch, step_in_epoch, best_nme = 0, 0, 0, math.inf
    if resume:
        try:
            state = load_checkpoint(last_path)
        except ValueError as error:
            raise TrainingError(f"--resume: {error}; move it away to start a new run in {out}") from error
        recorded = read_json(out / "config.json").get("data_manifest_sha256")
        if recorded and recorded != data_manifest(data_root):
            raise TrainingError(
                f"--resume: the annotations in {data_root} differ from those {out} started with "
                "(data_manifest_sha256 in config.json); an exact resume needs the same data"
            )
        changed = {
            k for k, v in state["config"].items() if k not in RESUMABLE_CHANGES and cfg.to_dict().get(k) != v
        }
        if changed:
            raise TrainingError(
                f"--resume with a different config: {sorted(changed)} differ from {last_path}"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        iteration, epoch, step_in_epoch = state["iteration"], state["epoch"], state["step_in_epoch"]
        best_nme = state["best_val_nme"]
        rngs = state["rng"]
        set_rng_state(rngs[rt.rank] if len(rngs) == rt.world else rngs[0])
    raw_model = model
    if cfg.sync_bn:
        if rt.device.type != "cuda":
            raise ConfigError("sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); use freeze_bn")
        if not dist.is_initialized():
            raise ConfigError("sync_bn needs a process group: start the run with torchrun")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if dist.is_initialized():
        model = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )

    # Run folder: config, commit and data checksum of this session (a resumed run may change the keys in
    # RESUMABLE_CHANGES), every session's command and commit; the log keeps only lines up to the resumed step.
    if rt.main:  # `prepare_output` above made the folder
        commit = git_commit()
        session_info = {"command": command, "commit": commit, "from_iteration": iteration}
        info = {
            "config": cfg.to_dict(),
            "command": command,
            "commit": commit,
            "data_root": str(data_root.resolve()),
            "data_manifest_sha256": data_manifest(data_root),
            "world_size": rt.world,
            "device": hardware(rt.device),
            "torch": torch.__version__,
            "train_faces": len(train_set),
            "val_faces": len(val_set),
            "iters_per_epoch": iters_per_epoch,
            "total_iters": total_iters,
            "micro_batch": micro,
            "accumulation": accum,
        }
        if not resume:
            log_path.unlink(missing_ok=True)
            info["sessions"] = [session_info]
        else:
            previous = read_json(out / "config.json")
            info["sessions"] = [*previous.get("sessions", []), session_info]
            kept = [
                line for line in read_jsonl(log_path, torn_tail=True) if line.get("iteration", 0) <= iteration
            ]
            atomic_bytes(log_path, jsonl_text(kept).encode())
        save_json(info, out / "config.json")
        (out / "summary.json").unlink(missing_ok=True)  # written again when this session completes the run
    log_file = open(log_path, "a") if rt.main else None  # noqa: SIM115 (closed in the finally below)

    session: list[dict[str, Any]] = []  # this session's records, for the speed lines of summary.json
    spent = {"checkpoint_s": 0.0}  # this session's time in writing checkpoints, for summary.json

    def log(record: dict[str, Any]) -> None:
        if log_file is not None:
            record["elapsed_s"] = time.perf_counter() - started  # wall clock of this session, for timelines
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            session.append(record)

    def kept_note() -> str:
        if not last_path.exists():
            return " (no checkpoint was written yet)"
        return (
            f"; the last good checkpoint is {last_path} (iteration {load_checkpoint(last_path)['iteration']})"
        )

    def checkpoint(path: Path, full: bool, position: tuple[int, int], val_nme: float | None = None) -> None:
        """Save a checkpoint (rank 0 writes). A full one is collective: every rank adds its RNG state."""
        begin = time.perf_counter()
        rngs = [rng_state()]
        if full and rt.world > 1:
            rngs = [None] * rt.world
            dist.all_gather_object(rngs, rng_state())
        if not bool(torch.stack([torch.isfinite(p).all() for p in raw_model.parameters()]).all()):
            raise TrainingError(f"weights became non-finite at iteration {iteration}; not saved{kept_note()}")
        if not rt.main:
            return
        state: dict[str, Any] = {
            "model": raw_model.state_dict(),
            "config": cfg.to_dict(),
            "epoch": position[0],
            "step_in_epoch": position[1],
            "iteration": iteration,
            "val_nme": val_nme,
            "best_val_nme": best_nme,
        }
        if full:
            state["optimizer"] = optimizer.state_dict()
            state["rng"] = rngs
            state["world_size"] = rt.world
        save_checkpoint(state, path)
        spent["checkpoint_s"] += time.perf_counter() - begin

    def end_of_block(position: tuple[int, int]) -> None:
        """Validate (rank 0), keep best, then save last at `position` (next epoch, next step). Without a
        hold-out, best.pt is the latest weights."""
        nonlocal best_nme
        val_nme = math.nan
        if rt.main and not val_batches:
            checkpoint(best_path, full=False, position=position)
        elif rt.main:
            start = time.perf_counter()
            val_nme = validate(raw_model, val_batches, cfg, rt.device)
            set_train_mode(raw_model, cfg.freeze_bn)
            improved = val_nme < best_nme
            best_nme = min(best_nme, val_nme)
            seconds = time.perf_counter() - start
            log(
                {
                    "iteration": iteration,
                    "epoch": epoch,
                    "val_nme": val_nme,
                    "best_val_nme": best_nme,
                    "val_s": seconds,
                }
            )
            if improved:
                checkpoint(best_path, full=False, position=position, val_nme=val_nme)
        checkpoint(last_path, full=True, position=position, val_nme=val_nme)

    if rt.main:
        held_out = f"{len(val_set)} held out for validation" if len(val_set) else "no validation hold-out"
        print(
            f"training {cfg.model} on {len(train_set)} faces ({held_out}), "
            f"{rt.world} process(es) on {rt.device.type}, global batch {cfg.global_batch} = {rt.world} x "
            f"{accum} x {micro}, {iters_per_epoch} steps/epoch, {total_iters} steps",
            flush=True,
        )
    bar = tqdm(
        total=total_iters, initial=iteration, desc="train", unit="step", disable=not rt.main, mininterval=1
    )
    window = {"loss": 0.0, "steps": 0, "wait": 0.0, "start": time.perf_counter()}
    setup_s = window["start"] - started
    set_train_mode(model, cfg.freeze_bn)

    def epoch_batches(epoch: int, step: int) -> Iterator[dict[str, Tensor]]:
        """Micro-batches of `epoch` from its step `step`: order by (seed, epoch), augmentation by
        (seed, epoch, index). Worker processes start loading as soon as this is called."""
        sampler.set_epoch(epoch, skip=step * per_process)
        train_set.set_epoch(epoch)
        return iter(train_loader)

    batches = epoch_batches(epoch, step_in_epoch)
    stop = StopRequest()
    stop.install()
    try:
        while iteration < total_iters:
            while step_in_epoch < iters_per_epoch and iteration < total_iters:
                wait = time.perf_counter()
                micro_batches = [next(batches) for _ in range(accum)]
                window["wait"] += time.perf_counter() - wait
                lr = lr_at(iteration, iters_per_epoch, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                try:
                    loss = forward_backward(model, micro_batches, cfg, rt.device)
                except torch.cuda.OutOfMemoryError as error:
                    advice = out_of_memory_advice(micro, cfg.global_batch, rt.device)
                    raise TrainingError(
                        f"out of memory in iteration {iteration}: {advice}{kept_note()}"
                    ) from error
                signalled = torch.tensor(float(stop.signum is not None), device=loss.device)
                shared = torch.stack([loss.detach().float(), signalled])
                if rt.world > 1:  # one all-reduce: the mean loss, and whether any process was signalled
                    dist.all_reduce(shared)
                    shared[0] /= rt.world
                loss_value, signals = shared.tolist()
                stop_now = signals > 0
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"loss is {loss_value} at iteration {iteration} (epoch {epoch}, lr {lr:.3g}): "
                        f"training stopped before this update{kept_note()}"
                    )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                iteration += 1
                step_in_epoch += 1
                bar.update(1)
                window["loss"] += loss_value
                window["steps"] += 1
                # The run's first step (cold start: cuDNN plans, compilation) is logged on its own, so the
                # windows after it measure the steady state.
                if iteration % cfg.log_every == 0 or iteration in (1, total_iters):
                    seconds = time.perf_counter() - window["start"]
                    images = window["steps"] * cfg.global_batch
                    steps = window["steps"]
                    log(
                        {
                            "iteration": iteration,
                            "epoch": epoch,
                            "loss": window["loss"] / steps,
                            "lr": lr,
                            "images_per_s": images / seconds,
                            "images_per_s_per_device": images / seconds / rt.world,
                            "step_s": seconds / steps,
                            "data_wait_s": window["wait"] / steps,
                            "data_wait_share": window["wait"] / seconds,
                            "memory_mb": memory_mb(rt.device),
                        }
                    )
                    bar.set_postfix(loss=f"{window['loss'] / window['steps']:.3g}", lr=f"{lr:.2g}")
                    window = {"loss": 0.0, "steps": 0, "wait": 0.0, "start": time.perf_counter()}
                if stop_now:
                    checkpoint(last_path, full=True, position=(epoch, step_in_epoch))
                    signum = stop.signum or signal.SIGTERM  # another process may have been the one signalled
                    raise Interrupted(
                        f"{signal.Signals(signum).name} after iteration {iteration} of {total_iters}; "
                        f"{last_path} holds it: run the same command with --resume to continue",
                        signum,
                    )
                if cfg.ckpt_every and iteration % cfg.ckpt_every == 0 and step_in_epoch < iters_per_epoch:
                    checkpoint(last_path, full=True, position=(epoch, step_in_epoch))
            pause = time.perf_counter()
            if step_in_epoch == iters_per_epoch:
                if iteration < total_iters:  # the workers load the next epoch while rank 0 validates
                    batches = epoch_batches(epoch + 1, 0)
                end_of_block((epoch + 1, 0))
                epoch, step_in_epoch = epoch + 1, 0
            else:  # stopped by max_iters inside an epoch
                end_of_block((epoch, step_in_epoch))
            if rt.world > 1:
                dist.barrier()
            window["start"] += time.perf_counter() - pause  # throughput excludes validation
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
        if log_file is not None:
            log_file.close()
    if rt.main:
        summary = {
            "iterations": iteration,
            "epochs_done": epoch,
            "best_val_nme": best_nme if math.isfinite(best_nme) else None,
            "best_iteration": load_checkpoint(best_path)["iteration"],
            "seconds_this_session": time.perf_counter() - started,
            "setup_s": setup_s,
            **speed_summary(session),
            "checkpoint_s": spent["checkpoint_s"],
        }
        save_json(summary, out / "summary.json")
        chosen = f"best validation NME {100 * best_nme:.2f}%" if val_batches else "final weights kept"
        print(f"done: {iteration} steps, {chosen}, {best_path}", flush=True)
    return 0


def speed_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed of a session from its log records: the cold first window apart, medians of the later ones.

    Keys: first_step_s (None for a resumed session), steady_images_per_s, steady_step_s and
    data_wait_share (medians over the windows after the first; None when there are none), peak_memory_mb,
    and validation_s (all validations of the session together).
    """
    steps = [r for r in records if "loss" in r]
    steady = steps[1:]  # the first window holds the session's cold start (step 1 alone in a new run)
    first = steps[0] if steps and steps[0]["iteration"] == 1 else None

    def median(key: str) -> float | None:
        return float(np.median([r[key] for r in steady])) if steady else None

    return {
        "first_step_s": first["step_s"] if first else None,
        "steady_images_per_s": median("images_per_s"),
        "steady_step_s": median("step_s"),
        "data_wait_share": median("data_wait_share"),
        "peak_memory_mb": max((r["memory_mb"] for r in steps), default=None),
        "validation_s": sum(r["val_s"] for r in records if "val_s" in r),
    }


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
    """
    import dataclasses
    import tempfile

    from hrnet_lib.model.hrnet import build_model

    cfg = get_preset(cfg) if isinstance(cfg, str) else cfg
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    rt = Runtime(0, 1, 0, torch.device("cpu"))
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        rt.device = torch.device("cuda", torch.cuda.current_device())
    torch.set_flush_denormal(True)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    _, micro, accum = batch_sizes(cfg, 1)
    with tempfile.TemporaryDirectory() as tmp:
        train_set, _ = build_datasets(cfg, Path(data_root), Path(cache_dir or tmp), True)
        if len(train_set) < micro:
            raise TrainingError(f"{len(train_set)} training faces give no batch of {micro}")
        # One pass of a sampler with replacement covers every step: no epoch ends, so a small
        # dataset does not drain and refill the workers' queue in the middle of the timed steps.
        sampler = RandomSampler(train_set, replacement=True, num_samples=(warmup + steps) * accum * micro)
        loader = DataLoader(
            train_set,
            batch_size=micro,
            sampler=sampler,
            pin_memory=rt.device.type == "cuda",
            **worker_options(cfg.workers),
        )
        model = build_model(cfg.model, cfg.num_keypoints, cfg.upsample).to(rt.device)
        if rt.device.type == "cuda" and cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        net: nn.Module = torch.compile(model) if cfg.compile else model
        set_train_mode(net, cfg.freeze_bn)
        batches = iter(loader)
        wait = 0.0
        for step in range(warmup + steps):
            if step == warmup:
                if rt.device.type == "cuda":
                    torch.cuda.synchronize(rt.device)
                wait, start = 0.0, time.perf_counter()
            fetch = time.perf_counter()
            micro_batches = [next(batches) for _ in range(accum)]
            wait += time.perf_counter() - fetch
            loss = forward_backward(net, micro_batches, cfg, rt.device)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # waits for the device
        seconds = time.perf_counter() - start
    images = steps * accum * micro
    return {
        "device": torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "model": cfg.model,
        "input_size": cfg.input_size,
        "micro_batch": micro,
        "accumulation": accum,
        "bf16": rt.device.type == "cuda" and cfg.bf16,
        "channels_last": rt.device.type == "cuda" and cfg.channels_last,
        "compile": cfg.compile,
        "cache": cfg.cache,
        "workers": cfg.workers,
        "steps": steps,
        "images_per_s": images / seconds,
        "step_s": seconds / steps,
        "data_wait_share": wait / seconds,
        "peak_memory_mb": memory_mb(rt.device),
    }
