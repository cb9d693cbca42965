"""The faces a training run learns from and validates on, as datasets with their face-crop caches."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from hrnet_lib.data.loader import FaceCropCache, WFLWDataset, faces_digest
from hrnet_lib.data.wflw import IMAGE_DIR, WFLWFormatError, annotation_path, load_split
from hrnet_lib.io import NoSpaceError
from hrnet_lib.train.presets import TrainConfig
from hrnet_lib.train.runtime import TrainingError
from hrnet_lib.train.sampler import split_train_val


def load_faces(data_root: Path, cfg: TrainConfig) -> tuple[list, list]:
    """Train and validation faces of the TRAIN split (no validation faces when `cfg.val_fraction` is 0);
    `TrainingError` naming what is missing or wrong."""
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


def open_cache(directory: Path, faces: list, image_root: Path, cfg: TrainConfig) -> FaceCropCache:
    """The face-crop cache of `faces` in `directory`, built there when needed; a folder that cannot be
    written or a full disk is a TrainingError that says how to go on."""
    try:
        return FaceCropCache(directory, faces, image_root, cfg.input_size, max_scale=cfg.scale_range[1])
    except OSError as error:
        if isinstance(error, NoSpaceError):
            reason = str(error)
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
            reason = f"cannot write the face-crop cache {directory} ({error.strerror}: {error.filename})"
        else:
            raise
        raise TrainingError(
            f"{reason}; put it elsewhere with --cache-dir DIR, or train without it (cache=false)"
        ) from None


def build_datasets(
    cfg: TrainConfig, data_root: Path, cache_root: Path, main_process: bool
) -> tuple[Any, Any]:
    """Training (augmented) and validation datasets, with face-crop caches built once by rank 0."""
    train_faces, val_faces = load_faces(data_root, cfg)
    image_root = data_root / IMAGE_DIR
    caches: list[Any] = [None, None]
    if cfg.cache:
        for i, faces in enumerate((train_faces, val_faces)):
            if not faces:
                continue
            directory = cache_root / f"crops-{cfg.input_size}-{faces_digest(faces)[:16]}"
            if main_process:  # rank 0 builds, the others open what it built
                open_cache(directory, faces, image_root, cfg)
            if dist.is_initialized():
                dist.barrier()
            caches[i] = open_cache(directory, faces, image_root, cfg)
    common = dict(
        input_size=cfg.input_size,
        heatmap_size=cfg.heatmap_size,
        sigma=cfg.sigma,
        unbiased=cfg.unbiased,
        seed=cfg.seed,
        device_targets=True,  # uint8 crops + keypoints; `device_batch` normalises and encodes on the device
    )
    train_set = WFLWDataset(
        train_faces, image_root, train=True, augment=cfg.augment(), cache=caches[0], **common
    )
    val_set = WFLWDataset(val_faces, image_root, train=False, cache=caches[1], **common)
    return train_set, val_set


def validation_batches(val_set: Any, cfg: TrainConfig) -> list[dict[str, Tensor]]:
    """The validation faces as batches of `cfg.val_batch`, loaded once and kept in host memory.

    Validation crops are fixed (no augmentation), so each epoch reuses them instead of loading them again;
    with WFLW's 375 held-out faces at 256 pixels that is 74 MB of uint8 crops.
    """
    return list(DataLoader(val_set, batch_size=cfg.val_batch, shuffle=False))
