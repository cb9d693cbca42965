"""Training configurations: one small dataclass and the named presets the commands and the book use.

A preset is a complete `TrainConfig`; command-line overrides `key=value` replace single fields, with
the value parsed by the field's type, so `epochs=3 milestones=2,3 per_device_batch=none` all work.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from hrnet_lib.data.transforms import Augment
from hrnet_lib.device import PRECISIONS


class ConfigError(ValueError):
    """A bad preset name, override key or override value; its message says what is valid."""


# What `compile` values written as booleans (config.json of older runs, `compile=true`) mean.
COMPILE_ALIASES = {"false": "off", "0": "off", "no": "off", "true": "model", "1": "model", "yes": "model"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (model, data, recipe, hardware switches).

    The recipe fields default to the published mmpose recipe (FACTS.md): Adam lr 2e-3 without weight
    decay, linear warm-up from 0.001x over 500 iterations, lr x0.1 at epochs 40 and 55, 60 epochs,
    global batch 512, input 256, heatmaps 64, sigma 2, flip/scale/rotation augmentation.
    """

    # model
    model: str = "hrnetv2_w18"
    num_keypoints: int = 98
    upsample: str = "bilinear"
    # data and targets
    input_size: int = 256
    heatmap_size: int = 64
    sigma: float = 2.0
    unbiased: bool = False  # DARK targets (mmpose's DARK row, 3.98): validation decodes with DARK; evaluate
    # such a checkpoint with `--decoder dark`
    val_fraction: float = 0.05  # held-out share of the TRAIN split (whole images), never the test split; 0 =
    # none held out, no validation, best.pt = the final weights (mmpose's data and step count)
    limit: int = 0  # use only the first N training faces (0 = all); for quick runs
    cache: bool = True  # decode each source image once into a face-crop cache
    workers: int = 8
    # augmentation (FACTS.md: the config that produced the published checkpoint; values kept in Augment)
    flip_prob: float = Augment.flip_prob
    scale_sigma: float = Augment.scale_sigma
    scale_range: tuple[float, float] = Augment.scale_range
    rot_sigma: float = Augment.rot_sigma
    rot_max: float = Augment.rot_max
    rot_prob: float = Augment.rot_prob
    # optimisation
    global_batch: int = 512
    per_device_batch: int | None = None  # None = global_batch / world size; smaller = gradient accumulation
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = (40, 55)
    gamma: float = 0.1
    loss: str = "mse"  # "mse" (the recipe) or "awing" (Adaptive Wing: mmpose's row 4.02, same recipe
    # otherwise)
    freeze_bn: bool = False  # BN layers in eval mode (running statistics) while training
    # hardware
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    precision: str = "auto"  # "auto": bf16 autocast where the device runs bf16 natively (CUDA, a CPU with
    # AMX or AVX-512 BF16), fp32 elsewhere; "bf16" or "fp32" force it (device.resolve_precision)
    channels_last: bool = True  # channels_last memory format (faster convolutions on CPUs and GPUs alike)
    compile: str = "off"  # torch.compile: "off", "model" (the whole network as one graph) or "modules" (each
    # HighResolutionModule alone: identical modules share one compiled graph, so it compiles in about half
    # the time); true and false still mean "model" and "off"
    sync_bn: bool = False  # CUDA only (torch's SyncBatchNorm has no CPU kernel)
    cudnn_benchmark: bool = True  # time cuDNN's algorithms for each new conv shape (slow first steps)
    # reproducibility, logging, checkpoints
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10  # iterations between log lines
    ckpt_every: int = 0  # iterations between mid-epoch checkpoints (0 = end of each epoch only)
    max_iters: int = 0  # stop after this many optimiser steps in total (0 = run all epochs)
    val_batch: int = 64
    val_flip: bool = False  # flip test during validation (the final evaluation always reports both)

    def __post_init__(self) -> None:
        """Refuse values no run can use, naming the field (an override's typo surfaces here, not mid-run)."""
        self.compile = COMPILE_ALIASES.get(str(self.compile).lower(), self.compile)
        for item in dataclasses.fields(self):
            values = getattr(self, item.name)
            for value in values if isinstance(values, tuple) else (values,):
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"bad {item.name}={values!r}: must be a finite number")
        low, high = self.scale_range
        rules = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("global_batch", self.global_batch >= 1, "at least 1"),
            ("per_device_batch", self.per_device_batch is None or self.per_device_batch >= 1, "none or >= 1"),
            ("lr", self.lr >= 0, "0 or more"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("warmup_iters", self.warmup_iters >= 0, "0 or more"),
            ("warmup_ratio", 0 < self.warmup_ratio <= 1, "in (0, 1]"),
            ("gamma", self.gamma > 0, "positive"),
            (
                "milestones",
                list(self.milestones) == sorted(self.milestones) and min(self.milestones, default=1) >= 1,
                "increasing epochs, each at least 1",
            ),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1): a share of the TRAIN split"),
            (
                "input_size",
                self.input_size >= 32 and self.input_size % 32 == 0,
                "a multiple of 32 (HRNet's strides)",
            ),
            ("heatmap_size", self.heatmap_size * 4 == self.input_size, "input_size / 4 (the head's stride)"),
            ("sigma", self.sigma > 0, "positive"),
            ("loss", self.loss in ("mse", "awing"), "mse or awing (Adaptive Wing)"),
            ("precision", self.precision in PRECISIONS, "auto, bf16 or fp32"),
            ("compile", self.compile in ("off", "model", "modules"), "off, model or modules"),
            ("limit", self.limit >= 0, "0 (all faces) or more"),
            ("workers", self.workers >= 0, "0 or more"),
            ("flip_prob", 0 <= self.flip_prob <= 1, "a probability"),
            ("rot_prob", 0 <= self.rot_prob <= 1, "a probability"),
            ("scale_range", 0 < low <= high, "0 < low <= high"),
            ("scale_sigma", self.scale_sigma >= 0, "0 or more"),
            ("rot_sigma", self.rot_sigma >= 0, "0 or more"),
            ("rot_max", self.rot_max >= 0, "0 or more"),
            (
                "device",
                self.device in ("auto", "cpu", "cuda"),
                "auto, cpu or cuda (under torchrun each process takes the GPU of its LOCAL_RANK)",
            ),
            ("log_every", self.log_every >= 1, "at least 1"),
            ("ckpt_every", self.ckpt_every >= 0, "0 (end of epoch only) or more"),
            ("max_iters", self.max_iters >= 0, "0 (all epochs) or more"),
            ("val_batch", self.val_batch >= 1, "at least 1"),
        ]
        for name, ok, valid in rules:
            if not ok:
                raise ConfigError(f"bad {name}={getattr(self, name)!r}: must be {valid}")

    def augment(self) -> Augment:
        """The training augmentation these fields describe."""
        return Augment(
            self.flip_prob, self.scale_sigma, self.scale_range, self.rot_sigma, self.rot_max, self.rot_prob
        )

    def to_dict(self) -> dict[str, typing.Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, typing.Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error (a checkpoint from another version). A config
        written before `precision` existed is read as it ran (`legacy_precision`)."""
        values = legacy_precision(values)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        hints = typing.get_type_hints(cls)
        fixed = {k: tuple(v) if _is_tuple(hints[k]) and v is not None else v for k, v in values.items()}
        return cls(**fixed)


def legacy_precision(values: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """A config dict of the older layout (a `bf16` flag, bf16 and channels_last on CUDA only) in the
    current one, with the precision it ran: a CPU run stays fp32 and NCHW, `bf16=false` is fp32, and
    `bf16=true` elsewhere is "auto" (bf16 on CUDA, as before). Other dicts are returned as they are."""
    if "bf16" not in values:
        return values
    values = dict(values)
    bf16 = values.pop("bf16")
    on_cpu = values.get("device") == "cpu"
    values["precision"] = "auto" if bf16 and not on_cpu else "fp32"
    if on_cpu:
        values["channels_last"] = False
    return values


def _smoke() -> TrainConfig:
    """Seconds on a CPU: tiny synthetic data, 64-pixel crops, two short epochs.

    For tests and notebook smoke runs; it checks that everything runs, not that anything is learnt.
    """
    return TrainConfig(
        model="hrnetv2_w18_small_v2",
        input_size=64,
        heatmap_size=16,
        sigma=1.0,
        val_fraction=0.25,
        cache=False,
        workers=0,
        global_batch=4,
        epochs=2,
        warmup_iters=2,
        milestones=(1,),
        log_every=1,
        val_batch=8,
        device="cpu",
    )


def _cpu_default() -> TrainConfig:
    """The embedded default that `make reproduce` trains on synthetic WFLW on a 2-core CPU.

    Sized so that a fresh clone's `make reproduce` (setup, data, training, evaluation, book) ends within 12
    minutes where the CPU runs bf16 (auto precision): W18-small-v2 at 96x96, since images seen matter more
    than resolution from scratch, and bf16's speed spent on epochs, which beat more faces or larger
    steps here. The recipe's shape kept (Adam 2e-3, warm-up, x0.1 at 70% and 95%). MEASUREMENTS.md has why.
    """
    return TrainConfig(
        model="hrnetv2_w18_small_v2",
        input_size=96,
        heatmap_size=24,
        sigma=1.0,
        val_fraction=0.1,
        cache=True,
        workers=0,
        global_batch=32,
        epochs=20,
        lr=2e-3,
        warmup_iters=50,
        milestones=(14, 19),
        log_every=10,
        val_batch=64,
        device="cpu",
    )


def _wflw_mmpose() -> TrainConfig:
    """The published recipe as mmpose ran it: 8 GPUs x 64 images = global batch 512, 60 epochs.

    BatchNorm over each GPU's 64 images, as in mmpose. 5% of the train split is held out to pick best.pt
    (mmpose picked on the test set); `val_fraction=0` trains on all of it, mmpose's 900 steps.
    """
    return TrainConfig(global_batch=512, per_device_batch=64, workers=8)


def _wflw_1gpu() -> TrainConfig:
    """The published recipe on one GPU: the whole global batch of 512 in one pass, 60 epochs.

    BatchNorm statistics are over each pass's 512 images (`per_device_batch=64` gives mmpose's 64);
    validation runs the same batch shape; `compile=model` or `modules` trades start-up time for step time.
    Its measured timings are in MEASUREMENTS.md.
    """
    return TrainConfig(global_batch=512, per_device_batch=None, val_batch=512, workers=12)


PRESETS: dict[str, typing.Callable[[], TrainConfig]] = {
    "wflw-mmpose": _wflw_mmpose,
    "wflw-1gpu": _wflw_1gpu,
    "cpu-default": _cpu_default,
    "smoke": _smoke,
}


def get_preset(name: str) -> TrainConfig:
    """A fresh `TrainConfig` for a preset name; `ConfigError` listing the valid names otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Return a copy of `cfg` with `key=value` overrides applied, each value parsed by its field type."""
    hints = typing.get_type_hints(TrainConfig)
    changes: dict[str, typing.Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
            raise ConfigError(f"unknown config key {key!r} in override {item!r}; valid keys: {valid}")
        try:
            changes[key] = _parse(text.strip(), hints[key])
        except ValueError as error:
            kind = _type_name(hints[key])
            raise ConfigError(f"bad value {text!r} for {key!r} (type {kind}): {error}") from None
    return dataclasses.replace(cfg, **changes)


def _is_tuple(tp: typing.Any) -> bool:
    return typing.get_origin(tp) is tuple


def _type_name(tp: typing.Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _parse(text: str, tp: typing.Any) -> typing.Any:
    """Parse one override value as type `tp` (bool, int, float, str, `X | None`, tuple[...])."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null"):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(text, inner)
    if origin is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        inner = args[0]
        values = tuple(_parse(p.strip(), inner) for p in parts)
        if args[-1] is not Ellipsis and len(values) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values")
        return values
    if tp is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if tp is int:
        return int(text)
    if tp is float:
        return float(text)
    if tp is str:
        return text
    raise ValueError(f"unsupported field type {tp}")
