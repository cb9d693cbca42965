"""WFLW samples (crop, augment, normalise, heatmap targets), the DataLoader factory and a face-crop cache.

A sample is the mmpose top-down pipeline for one face: crop box from the landmarks (padded 1.25), optional
flip, scale and rotation about the crop centre, cv2 `warpAffine` (bilinear, zero border) to the input size,
ImageNet normalisation, and Gaussian heatmap targets. Augmentation for (seed, epoch, index) is drawn from its
own RNG, so a sample does not depend on worker count or order and training can resume exactly.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from hrnet_lib.data.targets import encode_heatmaps, heatmap_weights
from hrnet_lib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    compose_affine,
    face_box,
    flip_landmarks,
    flip_matrix,
    invert_affine,
    random_augment,
    transform_points,
    warp_matrix,
)
from hrnet_lib.data.wflw import probe_image
from hrnet_lib.io import NoSpaceError, atomic_bytes

if TYPE_CHECKING:
    from hrnet_lib.data.wflw import Face

CACHE_VERSION = 2
_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_INV_STD = 1.0 / np.array(IMAGENET_STD, dtype=np.float32)


def crop_box(face: Face, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Padded crop centre (2,) and scale (2,) in image pixels.

    The official mmpose values when the face has them (read from mmpose json), else the square box around the
    landmarks' extent.
    """
    if face.center is not None and face.scale is not None:
        center = np.asarray(face.center, dtype=np.float64)
        scale = np.asarray(face.scale, dtype=np.float64) * padding
        return center, np.broadcast_to(scale, (2,)).copy()
    return face_box(face.landmarks, padding)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent generator for one sample of one epoch."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def read_image(path: Path, source: str = "") -> np.ndarray:
    """Read an image as BGR uint8 (H, W, 3); an error naming the file and annotation line if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        where = f" (face from {source})" if source else ""
        raise FileNotFoundError(f"{path}: cannot read image{where}")
    return image


def read_checked_image(path: Path) -> np.ndarray:
    """`read_image` after the checks the dataset reader makes (`probe_image`): a truncated or damaged file
    is a ValueError saying so, not an image whose missing part OpenCV filled with grey."""
    size = probe_image(Path(path))
    if isinstance(size, str):
        raise ValueError(size)
    return read_image(Path(path))


def faces_digest(faces: list[Face]) -> str:
    """SHA-256 of the faces' image paths, landmarks and official crop boxes (identifies a cache's faces)."""
    digest = hashlib.sha256()
    for face in faces:
        digest.update(face.image.encode())
        digest.update(np.ascontiguousarray(face.landmarks, dtype=np.float64).tobytes())
        for extra in (face.center, face.scale):
            digest.update(b"-" if extra is None else np.asarray(extra, dtype=np.float64).tobytes())
    return digest.hexdigest()


def cache_region(
    center: np.ndarray, side: float, max_scale: float = 1.25, margin: int = 2
) -> tuple[int, int, int]:
    """(x0, y0, n): the square of source pixels [x0, x0 + n) x [y0, y0 + n) that any crop of the padded box
    (centre, side) needs: scaled up to `max_scale`, turned by any angle, flipped or not (the box is square
    about its centre), plus `margin` pixels for bilinear interpolation."""
    half = 0.5 * max_scale * math.sqrt(2.0) * side + margin
    x0, y0 = (math.floor(c - half) for c in center)
    return x0, y0, math.ceil(2 * half) + 2


def cache_max_side(input_size: int, max_scale: float = 1.25, oversample: float = 2.0) -> int:
    """Largest cached side: twice the pixels an `input_size` crop of any scale and angle samples.

    A face whose region is larger (a face box of more than about 415 source pixels at input 256) is stored
    shrunk to this side with area filtering; every other face is stored at its source resolution."""
    return math.ceil(oversample * max_scale * math.sqrt(2.0) * input_size)


class FaceCropCache:
    """On-disk cache of the source pixels around each face, so each large image is decoded once, not once per
    sample, and the training crop is still a single resampling of the source, as in mmpose.

    Each face's `cache_region` is stored as a copy of the source pixels (zeros outside the image, the value
    cv2's constant border gives), so warping the cached region gives the crop that warping the whole image
    gives, to cv2's interpolation rounding. Only regions larger than `cache_max_side` are shrunk (area
    filter) to that side; their crops then differ from a single warp of the source by that prefilter.

    Files in `directory`: `crops.npy`, every face's square (n, n, 3) uint8 RGB region one after the other in
    one flat array read as a memmap, and `meta.json` with each face's offset, side, affine image -> cached
    region and source image size, and a key (faces, image files, settings). Reused when the key matches,
    rebuilt (with a progress bar, atomically) when not or when the meta is unreadable.
    """

    def __init__(
        self,
        directory: Path | str,
        faces: list[Face],
        image_root: Path | str,
        input_size: int = 256,
        padding: float = 1.25,
        max_scale: float = 1.25,
        progress: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.input_size = int(input_size)
        self.padding = float(padding)
        self.max_scale = float(max_scale)
        self.max_side = cache_max_side(self.input_size, self.max_scale)
        self.faces_digest = faces_digest(faces)
        image_root = Path(image_root)
        self.key = self._key(faces, image_root)
        self.built = False
        meta = self._read_meta()
        if meta is None or meta.get("key") != self.key:
            self._build(faces, image_root, progress)
            self.built = True
            meta = self._read_meta()
            assert meta is not None
        self.affines = np.asarray(meta["affines"], dtype=np.float64).reshape(-1, 2, 3)
        self.image_sizes = np.asarray(meta["image_sizes"], dtype=np.int64).reshape(-1, 2)
        self.offsets = np.asarray(meta["offsets"], dtype=np.int64)
        self.sides = np.asarray(meta["sides"], dtype=np.int64)
        self._array: np.ndarray | None = None

    @property
    def crops_path(self) -> Path:
        return self.directory / "crops.npy"

    @property
    def meta_path(self) -> Path:
        return self.directory / "meta.json"

    def __len__(self) -> int:
        return len(self.affines)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # each worker opens its own memmap instead of receiving a pickled copy
        return state

    def crop(self, index: int) -> np.ndarray:
        """Cached region (n, n, 3) uint8 RGB of face `index` (a memmap view)."""
        if self._array is None:
            self._array = np.load(self.crops_path, mmap_mode="r")
        side, offset = int(self.sides[index]), int(self.offsets[index])
        return self._array[offset : offset + side * side * 3].reshape(side, side, 3)

    def _key(self, faces: list[Face], image_root: Path) -> str:
        digest = hashlib.sha256(self.faces_digest.encode())
        settings = (CACHE_VERSION, self.input_size, self.padding, self.max_scale, self.max_side)
        digest.update(repr(settings).encode())
        for name in sorted({face.image for face in faces}):
            path = image_root / name
            stat = path.stat() if path.exists() else None
            digest.update(
                f"{name}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}".encode()
            )
        return digest.hexdigest()

    def _read_meta(self) -> dict[str, Any] | None:
        """The cache's meta, or None when it is missing, unreadable or corrupt (a stale cache: rebuild)."""
        if not self.meta_path.exists() or not self.crops_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_bytes())
        except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
            return None
        return meta if isinstance(meta, dict) else None

    def _layout(self, faces: list[Face]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per face: source region (x0, y0, n), stored side, offset in the flat array, affine image->cache."""
        regions = np.zeros((len(faces), 3), dtype=np.int64)
        sides = np.zeros(len(faces), dtype=np.int64)
        affines = np.zeros((len(faces), 2, 3))
        for i, face in enumerate(faces):
            center, scale = crop_box(face, self.padding)
            x0, y0, n = cache_region(center, float(scale[0]), self.max_scale)
            side = min(n, self.max_side)
            f = side / n  # cv2.resize maps source x to (x - x0 + 0.5) * f - 0.5; f = 1 is a plain shift
            affines[i] = [[f, 0.0, (0.5 - x0) * f - 0.5], [0.0, f, (0.5 - y0) * f - 0.5]]
            regions[i], sides[i] = (x0, y0, n), side
        offsets = np.concatenate([[0], np.cumsum(sides * sides * 3)[:-1]]).astype(np.int64)
        return regions, sides, offsets, affines

    def _reserve(self, tmp: Path, size: int) -> np.memmap:
        """A writable memmap of `size` bytes at `tmp`, its blocks allocated on disk first: a memmap that
        writes into a hole on a full disk dies of SIGBUS, with no message."""
        try:
            crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(size,))
            allocate(tmp)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(self.directory).free
            full = NoSpaceError(
                f"no space left on the device of {self.directory} for the face-crop cache: it needs "
                f"{size:,} bytes ({size / 2**30:.2f} GiB) and {free:,} are free"
            )
            full.errno = error.errno
            raise full from error
        return crops

    def _build(self, faces: list[Face], image_root: Path, progress: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.meta_path.unlink(missing_ok=True)  # never leave a key pointing at half-written crops
        by_image: dict[str, list[int]] = defaultdict(list)
        for i, face in enumerate(faces):
            by_image[face.image].append(i)
        regions, sides, offsets, affines = self._layout(faces)
        image_sizes = np.zeros((len(faces), 2), dtype=np.int64)
        total = int((sides * sides * 3).sum())
        remove_dead_builds(self.directory)
        tmp = self.directory / f"crops.npy.{socket.gethostname()}.{os.getpid()}.tmp"
        crops = self._reserve(tmp, max(total, 1))

        def crop_image(name: str) -> tuple[str, list[np.ndarray], tuple[int, int]]:
            """The regions of one source image, copied or shrunk (runs in a thread: cv2 releases the GIL)."""
            indices = by_image[name]
            patches = []
            image = read_image(image_root / name, faces[indices[0]].source)
            height, width = image.shape[:2]
            for i in indices:
                (x0, y0, n), side = regions[i], int(sides[i])
                region = np.zeros((n, n, 3), np.uint8)  # zeros where the region leaves the image
                sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + n, width), min(y0 + n, height)
                if sx0 < sx1 and sy0 < sy1:
                    region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
                if side != n:
                    region = cv2.resize(region, (side, side), interpolation=cv2.INTER_AREA)
                patches.append(region[..., ::-1].reshape(-1))  # BGR -> RGB
            return name, patches, (width, height)

        threads = max(1, min(8, os.cpu_count() or 1))
        try:
            with (
                tqdm(total=len(faces), desc="caching face crops", unit="face", disable=not progress) as bar,
                ThreadPoolExecutor(threads) as pool,
            ):
                for name, patches, size in pool.map(crop_image, list(by_image)):
                    for i, patch in zip(by_image[name], patches, strict=True):
                        crops[offsets[i] : offsets[i] + len(patch)] = patch
                    image_sizes[by_image[name]] = size
                    bar.update(len(by_image[name]))
            crops.flush()
            del crops
            with open(tmp, "rb+") as f:  # the memmap's flush syncs the data; fsync the file itself too
                os.fsync(f.fileno())
            os.replace(tmp, self.crops_path)
        finally:
            tmp.unlink(missing_ok=True)
        meta = {
            "key": self.key,
            "version": CACHE_VERSION,
            "input_size": self.input_size,
            "padding": self.padding,
            "max_scale": self.max_scale,
            "max_side": self.max_side,
            "faces_digest": self.faces_digest,
            "offsets": offsets.tolist(),
            "sides": sides.tolist(),
            "affines": affines.reshape(len(faces), 6).tolist(),
            "image_sizes": image_sizes.tolist(),
        }
        atomic_bytes(self.meta_path, json.dumps(meta).encode())


def allocate(path: Path) -> None:
    """Allocate every block of a (sparse) file now, where the platform and filesystem can: a full disk is
    then an OSError here rather than a failure at some later write."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "rb+") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a filesystem that cannot allocate ahead (EOPNOTSUPP): the blocks come as they are written


def remove_dead_builds(directory: Path) -> None:
    """Delete the temporary crop files (`crops.npy.HOST.PID.tmp`, or `crops.npy.PID.tmp` of older
    versions) that builds on this host left when they were killed: each can be gigabytes. A build whose
    process still runs, or that ran on another host sharing the folder, is left alone."""
    host = socket.gethostname()
    for path in directory.glob("crops.npy.*.tmp"):
        found = re.fullmatch(r"crops\.npy\.(?:(.+)\.)?(\d+)\.tmp", path.name)
        if found is None or found[1] not in (None, host):
            continue
        try:
            os.kill(int(found[2]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:  # PermissionError: alive, another user's
            continue


class WFLWDataset(Dataset):
    """Face crops with heatmap targets, as mmpose's top-down WFLW pipeline.

    Item keys: "image" float32 (3, S, S) ImageNet-normalised RGB; "heatmaps" float32 (K, h, h);
    "target_weight" float32 (K,) (0 only where the whole Gaussian patch is off the heatmap, as in mmpose: a
    point just outside the crop still trains on its partial Gaussian); "keypoints" float32 (K, 2) input
    pixels; "landmarks" float32 (K, 2) and "center" float32 (2,) in source-image pixels (of the mirrored
    image when "flipped"); "scale" float32 (2,) padded crop side after augmentation; "rotation" float32 ();
    "index" int64; "flipped" bool. Always
    keypoints == transform_points(landmarks, warp_matrix(center, scale, rotation, (S, S))).

    With `device_targets=True` (what training uses), "image" is the uint8 RGB crop and "heatmaps" is left
    out: `device_batch` normalises and encodes the targets on the GPU, so a worker ships 200 KB a face
    instead of 2.4 MB (the 98 x 64 x 64 float heatmaps are two thirds of it).
    """

    def __init__(
        self,
        faces: list[Face],
        image_root: Path | str,
        train: bool,
        input_size: int = 256,
        heatmap_size: int = 64,
        sigma: float = 2.0,
        augment: Augment | None = None,
        cache: FaceCropCache | None = None,
        seed: int = 0,
        unbiased: bool = False,
        device_targets: bool = False,
    ) -> None:
        self.faces = list(faces)
        self.image_root = Path(image_root)
        self.train = bool(train)
        self.input_size = int(input_size)
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        self.augment = (augment if augment is not None else Augment()) if self.train else None
        self.cache = cache
        self.seed = int(seed)
        self.unbiased = bool(unbiased)
        self.device_targets = bool(device_targets)
        self.padding = 1.25
        if cache is not None:
            if cache.faces_digest != faces_digest(self.faces):
                raise ValueError(
                    f"face-crop cache {cache.directory} was built for other faces than this dataset"
                )
            if cache.input_size != self.input_size:
                raise ValueError(
                    f"face-crop cache {cache.directory} was built for input size {cache.input_size}; "
                    f"this dataset's input size is {self.input_size}"
                )
            max_scale = self.augment.scale_range[1] if self.augment else 1.0
            if max_scale > cache.max_scale or cache.padding != self.padding:
                raise ValueError(
                    f"face-crop cache {cache.directory} covers scale <= {cache.max_scale} with padding "
                    f"{cache.padding}; this dataset needs scale {max_scale} with padding {self.padding}"
                )
        # Shared memory, so set_epoch reaches persistent DataLoader workers too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.faces)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before iterating the epoch's loader)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def augmentation(self, index: int) -> tuple[bool, float, float]:
        """(flip, scale_factor, rotation_deg) of sample `index` this epoch; identity at test time."""
        if self.augment is None:
            return False, 1.0, 0.0
        return random_augment(sample_rng(self.seed, self.epoch, index), self.augment)

    def __getitem__(self, index: int) -> dict[str, Any]:
        flip, scale_factor, rotation = self.augmentation(index)
        return self.make_sample(index, flip, scale_factor, rotation)

    def make_sample(self, index: int, flip: bool, scale_factor: float, rotation: float) -> dict[str, Any]:
        """The sample of face `index` under explicit augmentation parameters."""
        face = self.faces[index]
        size = self.input_size
        center, scale = crop_box(face, self.padding)
        scale = scale * scale_factor
        landmarks = np.asarray(face.landmarks, dtype=np.float64)
        if self.cache is not None:
            source = self.cache.crop(index)
            width = int(self.cache.image_sizes[index][0])
            source_to_image = invert_affine(self.cache.affines[index])
        else:
            source = read_image(self.image_root / face.image, face.source)
            width = source.shape[1]
            source_to_image = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        if flip:
            landmarks = flip_landmarks(landmarks, width)
            center = center.copy()
            center[0] = width - 1 - center[0]
            source_to_image = compose_affine(flip_matrix(width), source_to_image)
        to_crop = warp_matrix(center, scale, rotation, (size, size))
        crop = cv2.warpAffine(
            source,
            compose_affine(to_crop, source_to_image),
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        if self.cache is None:
            crop = crop[..., ::-1]  # BGR -> RGB (the cache stores RGB already)
        image = np.ascontiguousarray(crop.transpose(2, 0, 1))
        if not self.device_targets:
            image = (image.astype(np.float32) - _MEAN[:, None, None]) * _INV_STD[:, None, None]

        keypoints = transform_points(landmarks, to_crop)
        stride = size / self.heatmap_size
        grid = (self.heatmap_size, self.heatmap_size)
        if self.device_targets:  # `device_batch` encodes the heatmaps on the device
            weights = heatmap_weights(keypoints / stride, grid, self.sigma, self.unbiased)
        else:
            heatmaps, weights = encode_heatmaps(keypoints / stride, grid, self.sigma, self.unbiased)
        sample = {
            "image": image,
            "target_weight": weights,
            "keypoints": keypoints.astype(np.float32),
            "landmarks": landmarks.astype(np.float32),
            "center": center.astype(np.float32),
            "scale": scale.astype(np.float32),
            "rotation": np.float32(rotation),
            "index": np.int64(index),
            "flipped": flip,
        }
        if not self.device_targets:
            sample["heatmaps"] = heatmaps
        return sample


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, S, S) -> float32 ImageNet-normalised, as the dataset does without device targets."""
    mean = torch.as_tensor(_MEAN, device=images.device)[:, None, None]
    inv_std = torch.as_tensor(_INV_STD, device=images.device)[:, None, None]
    return (images.float() - mean) * inv_std


def device_batch(
    batch: dict[str, Any],
    device: torch.device,
    input_size: int,
    heatmap_size: int,
    sigma: float,
    unbiased: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, heatmaps, target weights) on `device` from a batch of a `device_targets` dataset.

    Normalises the uint8 crops and encodes the heatmap targets there; the weights are the dataset's
    (zero where a keypoint's whole Gaussian patch is off the heatmap).
    """
    from hrnet_lib.data.targets import encode_heatmaps_torch

    images = normalize_images(batch["image"].to(device, non_blocking=True))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    keypoints = batch["keypoints"].to(device, non_blocking=True) / (input_size / heatmap_size)
    heatmaps, _ = encode_heatmaps_torch(keypoints, (heatmap_size, heatmap_size), sigma, unbiased)
    weights = batch["target_weight"].to(device, non_blocking=True)
    return images, heatmaps, weights


def _worker_init(worker_id: int) -> None:
    cv2.setNumThreads(1)  # one thread per worker: parallelism comes from the workers
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the training process decides when to
    # stop (after saving), and its workers exit with it, not in the middle of its step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()


def _exit_with_parent() -> None:
    """End this worker as soon as the process that started it ends, however it ends (SIGKILL included).

    torch's workers watch their parent process, which for a worker from the fork server is the server;
    the server, in turn, lives until every holder of its pipe (the workers too) has exited. After a
    SIGKILL of the training process both would live on, holding memory, and ignore SIGTERM.
    """
    parent = multiprocessing.parent_process()  # its sentinel closes when the starting process ends
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    workers: int = 0,
    distributed: bool = False,
    seed: int = 0,
) -> DataLoader:
    """DataLoader for training (shuffled, incomplete last batch dropped) or evaluation (in order).

    Always samples through a DistributedSampler (one replica when not distributed), so the shuffle order is a
    function of (seed, epoch): call `set_loader_epoch(loader, epoch)` before each epoch. Workers start from a
    fork server, not a fork of this process: forking a process whose OpenCV/OpenMP thread pools are running
    can leave a worker deadlocked.
    """
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train)
    else:
        sampler = DistributedSampler(
            dataset, num_replicas=1, rank=0, shuffle=train, seed=seed, drop_last=train
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        **worker_options(workers),
    )


def worker_options(workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for `workers` worker processes: persistent, started from a fork server
    (where the platform has one) that ignores SIGINT and SIGTERM, OpenCV single-threaded in each. Use them
    for any loader of WFLWDataset."""
    if workers <= 0:
        return {"num_workers": 0}
    forkserver = "forkserver" in multiprocessing.get_all_start_methods()
    if forkserver:
        start_forkserver()
    return {
        "num_workers": workers,
        "persistent_workers": True,
        "worker_init_fn": _worker_init,
        "multiprocessing_context": "forkserver" if forkserver else None,
    }


def start_forkserver() -> None:
    """Start multiprocessing's fork server (once per process) in a process group of its own
    (`forkserver_init`), ignoring SIGTERM.

    A scheduler's SIGTERM, like Ctrl-C, goes to the whole process group. A fork server it killed made the
    DataLoader take each of its workers for dead ("worker exited unexpectedly"), and a worker it hit before
    `_worker_init` ran died; either way training failed with a traceback instead of stopping after its
    step. The server is started with the signals ignored (a disposition that survives exec) and blocked
    here (one that arrives meanwhile waits for this process's own handler), until it has left the group.
    """
    from multiprocessing import forkserver

    from hrnet_lib.data import forkserver_init

    preload = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["__main__"])
    if forkserver_init.__name__ not in preload:
        forkserver.set_forkserver_preload([*preload, forkserver_init.__name__])
    if threading.current_thread() is not threading.main_thread():  # signal.signal works there only
        forkserver.ensure_running()
        return
    stop = {signal.SIGINT, signal.SIGTERM}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in stop}
    os.environ[forkserver_init.SERVER_ENV] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(forkserver_init.SERVER_ENV, None)
        for signum, handler in handlers.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of the loader's sampler (shuffle order) and dataset (augmentation draws)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def bench_loader(
    source: Path | str | list[Face],
    n: int = 200,
    cache: bool = False,
    image_root: Path | str | None = None,
    split: str = "train",
    cache_dir: Path | str | None = None,
    train: bool = True,
    input_size: int = 256,
    device_targets: bool = False,
) -> dict[str, Any]:
    """Samples per second of one process (what each DataLoader worker delivers), with or without the cache.

    `device_targets=True` measures the samples training uses (uint8 crop, heatmaps left to the GPU).

    `source` is a WFLW root (faces of `split` are read with the reader) or a face list with `image_root`.
    Cache building is timed separately ("cache_build_s"); a temporary cache directory is used if none given.
    OpenCV runs single-threaded during the measurement, as in a DataLoader worker.
    """
    if isinstance(source, (str, Path)):
        from hrnet_lib.data.wflw import IMAGE_DIR, load_split

        root = Path(source)
        faces = load_split(root, split, check_images=False)
        image_root = root / IMAGE_DIR
    else:
        faces = list(source)
        if image_root is None:
            raise ValueError("bench_loader: image_root is required when passing a face list")
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in a DataLoader worker (see _worker_init)
    try:
        return _bench(faces, Path(image_root), n, cache, cache_dir, train, input_size, device_targets)
    finally:
        cv2.setNumThreads(threads)


def _bench(
    faces: list[Face],
    image_root: Path,
    n: int,
    cache: bool,
    cache_dir: Path | str | None,
    train: bool,
    input_size: int,
    device_targets: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        crop_cache = None
        build_s = None
        if cache:
            start = time.perf_counter()
            crop_cache = FaceCropCache(cache_dir or tmp, faces, image_root, input_size, progress=False)
            build_s = time.perf_counter() - start
        dataset = WFLWDataset(
            faces,
            image_root,
            train=train,
            input_size=input_size,
            cache=crop_cache,
            device_targets=device_targets,
        )
        for i in range(min(3, len(dataset))):  # warm-up: imports, first memmap open
            dataset[i]
        start = time.perf_counter()
        for i in range(n):
            dataset.set_epoch(i // len(dataset))
            dataset[i % len(dataset)]
        seconds = time.perf_counter() - start
    return {
        "cache": cache,
        "device_targets": device_targets,
        "train": train,
        "faces": len(faces),
        "samples": n,
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "cache_build_s": build_s,
    }
