"""WFLWDataset samples, deterministic augmentation, the DataLoader factory and the face-crop cache."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hrnet_lib.data.loader import (
    FaceCropCache,
    WFLWDataset,
    build_loader,
    device_batch,
    set_loader_epoch,
)
from hrnet_lib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    compose_affine,
    flip_matrix,
    flip_permutation,
    transform_points,
    warp_matrix,
)
from hrnet_lib.data.wflw import Face
from hrnet_lib.io import NoSpaceError

S = 256


def _face(image: str, landmarks: np.ndarray, **extra: np.ndarray) -> Face:
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    return Face(
        image=image, landmarks=landmarks, box=np.concatenate([low, high]), source=f"test:{image}", **extra
    )


def _rgb(sample: dict) -> np.ndarray:
    """Un-normalised (S, S, 3) RGB, 0..255."""
    return sample["image"].transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)


@pytest.fixture(scope="module")
def dots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Face]]:
    """A PNG with one red dot per landmark, brightness 50 + 2 k encoding the landmark index k."""
    root = tmp_path_factory.mktemp("dots")
    (root / "e").mkdir()
    ys, xs = np.meshgrid(np.arange(14), np.arange(7), indexing="ij")
    landmarks = np.stack([260.0 + 12 * xs.ravel(), 150.0 + 12 * ys.ravel()], axis=1)
    image = np.zeros((480, 640, 3), np.uint8)
    for k, (x, y) in enumerate(landmarks):
        cv2.circle(image, (int(x), int(y)), 3, (0, 0, 50 + 2 * k), -1)  # BGR: red only
    cv2.imwrite(str(root / "e" / "dots.png"), image)
    faces = [_face("e/dots.png", landmarks.copy()) for _ in range(10)]
    return root, faces


@pytest.fixture(scope="module")
def textured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Face]]:
    """A 1024x768 smooth-textured JPEG with faces of several sizes, one at the image border."""
    root = tmp_path_factory.mktemp("textured")
    (root / "e").mkdir()
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (768, 1024, 3)).astype(np.float32), (0, 0), 4)
    image = (image - image.mean()) * 8 + 128
    for _ in range(12):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        center = tuple(int(c) for c in rng.integers(0, 1024, 2))
        cv2.circle(image, center, int(rng.integers(10, 80)), color, -1)
    image = cv2.GaussianBlur(np.clip(image, 0, 255), (0, 0), 1.5).astype(np.uint8)
    cv2.imwrite(str(root / "e" / "scene.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    faces = []
    for (cx, cy), size in [((300, 300), 80), ((620, 380), 200), ((520, 420), 420), ((40, 700), 150)]:
        grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 7), np.linspace(-0.5, 0.5, 14)), -1).reshape(-1, 2)
        landmarks = np.array([cx, cy]) + size * (grid + rng.normal(0, 0.02, grid.shape))
        faces.append(_face("e/scene.jpg", landmarks))
    return root, faces


def test_test_sample_shapes_normalisation_and_dots(dots: tuple[Path, list[Face]]) -> None:
    root, faces = dots
    dataset = WFLWDataset(faces, root, train=False)
    sample = dataset[3]
    expected = {
        "image": (3, S, S),
        "heatmaps": (98, 64, 64),
        "target_weight": (98,),
        "keypoints": (98, 2),
        "landmarks": (98, 2),
        "center": (2,),
        "scale": (2,),
        "rotation": (),
    }
    for key, shape in expected.items():
        assert sample[key].shape == shape, key
        assert sample[key].dtype == np.float32, key
    assert sample["index"] == 3 and sample["index"].dtype == np.int64
    assert not sample["flipped"]
    # crop box: landmark extent 72 x 156 -> square side 156 * 1.25, centred on the extent
    np.testing.assert_allclose(sample["center"], [296, 228])
    np.testing.assert_allclose(sample["scale"], [195, 195])
    assert sample["rotation"] == 0
    np.testing.assert_allclose(
        sample["keypoints"], (faces[3].landmarks - [296, 228]) * S / 195 + 128, atol=1e-4
    )
    rgb = _rgb(sample)
    assert rgb.min() > -0.5 and rgb.max() < 255.5
    # background black: ImageNet-normalised zero
    np.testing.assert_allclose(
        sample["image"][:, 0, 0], -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), 1e-5
    )
    for k, (x, y) in enumerate(np.round(sample["keypoints"]).astype(int)):
        assert abs(rgb[y, x, 0] - (50 + 2 * k)) < 2, k  # red channel carries the dot (BGR -> RGB done)
        assert rgb[y, x, 1] < 1 and rgb[y, x, 2] < 1
    peaks = sample["heatmaps"].reshape(98, -1).argmax(axis=1)
    np.testing.assert_array_equal(
        np.stack([peaks % 64, peaks // 64], 1), np.trunc(sample["keypoints"] / 4 + 0.5)
    )
    np.testing.assert_array_equal(sample["target_weight"], np.ones(98))


def test_official_center_scale_used_when_present(dots: tuple[Path, list[Face]]) -> None:
    root, faces = dots
    face = _face(
        "e/dots.png", faces[0].landmarks, center=np.array([300.5, 230.0]), scale=np.array([160.0, 160.0])
    )
    sample = WFLWDataset([face], root, train=False)[0]
    np.testing.assert_allclose(sample["center"], [300.5, 230.0])
    np.testing.assert_allclose(sample["scale"], [200.0, 200.0])


@pytest.mark.parametrize(
    "flip,scale,rotation", [(True, 1.0, 0.0), (True, 1.2, 35.0), (False, 1.05, -50.0), (False, 0.85, 0.0)]
)
def test_augmented_sample_keeps_landmarks_on_dots(
    dots: tuple[Path, list[Face]], flip: bool, scale: float, rotation: float
) -> None:
    root, faces = dots
    dataset = WFLWDataset(faces, root, train=True)
    sample = dataset.make_sample(0, flip, scale, rotation)
    assert bool(sample["flipped"]) == flip
    assert sample["rotation"] == np.float32(rotation)
    np.testing.assert_allclose(sample["scale"], [195 * scale] * 2, rtol=1e-6)
    owner = flip_permutation() if flip else np.arange(98)  # after a flip, slot k holds original point perm[k]
    rgb = _rgb(sample)
    for k, (x, y) in enumerate(np.round(sample["keypoints"]).astype(int)):
        assert abs(rgb[y, x, 0] - (50 + 2 * owner[k])) < 3, k
    matrix = warp_matrix(sample["center"], sample["scale"], float(sample["rotation"]), (S, S))
    np.testing.assert_allclose(transform_points(sample["landmarks"], matrix), sample["keypoints"], atol=1e-3)


def test_keypoints_outside_input_keep_weight_while_their_gaussian_reaches_the_heatmap(
    dots: tuple[Path, list[Face]],
) -> None:
    """mmpose's rule: a point's weight is 0 only when its whole 3-sigma Gaussian patch is off the heatmap;
    a point just outside the crop still trains, on the part of its Gaussian that is on the map."""
    root, faces = dots
    crop = {"center": np.array([296.0, 228.0]), "scale": np.array([156.0, 156.0])}  # padded: x from 198.5
    for x, weight in ((197.0, 1.0), (100.0, 0.0)):  # 0.5 and 32 heatmap pixels left of the map
        landmarks = faces[0].landmarks.copy()
        landmarks[5] = [x, 160.0]
        sample = WFLWDataset([_face("e/dots.png", landmarks, **crop)], root, train=False)[0]
        assert sample["keypoints"][5][0] < 0
        assert sample["target_weight"][5] == weight
        assert (sample["heatmaps"][5][:, 0].max() > 0.5) == bool(weight)  # the Gaussian's right half
        assert np.all(np.delete(sample["target_weight"], 5) == 1)


def test_augmentation_is_deterministic_per_seed_epoch_index(dots: tuple[Path, list[Face]]) -> None:
    root, faces = dots
    dataset = WFLWDataset(faces, root, train=True, seed=7)
    dataset.set_epoch(3)
    first = dataset[4]
    draws3 = [dataset.augmentation(i) for i in range(10)]
    dataset.set_epoch(5)
    draws5 = [dataset.augmentation(i) for i in range(10)]
    dataset.set_epoch(3)
    again = dataset[4]
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert draws3 == [dataset.augmentation(i) for i in range(10)]
    assert draws3 != draws5
    other_seed = WFLWDataset(faces, root, train=True, seed=8)
    other_seed.set_epoch(3)
    assert draws3 != [other_seed.augmentation(i) for i in range(10)]
    test_set = WFLWDataset(faces, root, train=False)
    assert all(test_set.augmentation(i) == (False, 1.0, 0.0) for i in range(10))


def _collect(loader: torch.utils.data.DataLoader) -> list[tuple[int, bool, float, float]]:
    rows = []
    for batch in loader:
        for i in range(len(batch["index"])):
            rows.append(
                (
                    int(batch["index"][i]),
                    bool(batch["flipped"][i]),
                    round(float(batch["scale"][i, 0]), 3),
                    round(float(batch["rotation"][i]), 3),
                )
            )
    return rows


def test_loader_independent_of_workers_and_follows_epoch(dots: tuple[Path, list[Face]]) -> None:
    root, faces = dots
    dataset = WFLWDataset(faces, root, train=True, seed=1)
    single = build_loader(dataset, batch_size=4, train=True, workers=0, seed=1)
    multi = build_loader(dataset, batch_size=4, train=True, workers=2, seed=1)
    assert multi.persistent_workers and not single.persistent_workers
    seen = []
    for epoch in (0, 1):
        set_loader_epoch(single, epoch)
        rows = _collect(single)
        set_loader_epoch(multi, epoch)
        assert _collect(multi) == rows  # persistent workers see the new epoch
        assert len(rows) == 8  # 10 faces, batches of 4, incomplete batch dropped
        expected = [
            (i, flip, round(195 * scale, 3), round(rotation, 3))
            for i, (flip, scale, rotation) in ((i, dataset.augmentation(i)) for i, *_ in rows)
        ]
        np.testing.assert_allclose(np.array(rows, dtype=float), np.array(expected, dtype=float), atol=2e-3)
        seen.append(rows)
    assert seen[0] != seen[1]
    test_loader = build_loader(WFLWDataset(faces, root, train=False), batch_size=4, train=False)
    assert [row[0] for row in _collect(test_loader)] == list(range(10))


def _valid_mask(sample: dict, image_size: tuple[int, int], margin: float = 3.0) -> np.ndarray:
    """Crop pixels whose source point lies at least `margin` px inside the image (zero border elsewhere)."""
    width, height = image_size
    matrix = warp_matrix(sample["center"], sample["scale"], float(sample["rotation"]), (S, S))
    if sample["flipped"]:
        matrix = compose_affine(matrix, flip_matrix(width))
    ys, xs = np.mgrid[:S, :S]
    grid = np.stack([xs, ys], -1).astype(np.float64)
    source = transform_points(grid, cv2.invertAffineTransform(matrix))
    return np.all((source >= margin) & (source <= np.array([width, height]) - 1 - margin), axis=-1)


def test_cache_matches_uncached(textured: tuple[Path, list[Face]], tmp_path: Path) -> None:
    root, faces = textured
    cache = FaceCropCache(tmp_path / "cache", faces, root, progress=False)
    assert cache.built and len(cache) == 4
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["crops.npy", "meta.json"]
    plain = WFLWDataset(faces, root, train=True)
    cached = WFLWDataset(faces, root, train=True, cache=cache)
    params = [
        (False, 1.0, 0.0),
        (True, 1.25, 0.0),
        (False, 0.75, 45.0),
        (True, 1.25, 45.0),  # the widest reach: largest crop, turned by 45 degrees
        (True, 1.25, -60.0),
        (True, 1.1, 170.0),
    ]
    native = cache.affines[:, 0, 0] == 1.0  # stored at source resolution; the 420-pixel face is shrunk
    assert native.tolist() == [True, True, False, True] and cache.sides[2] == cache.max_side
    for index in range(len(faces)):
        for flip, scale, rotation in params:
            a = plain.make_sample(index, flip, scale, rotation)
            b = cached.make_sample(index, flip, scale, rotation)
            for key in ("heatmaps", "target_weight", "keypoints", "landmarks", "center", "scale"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            if native[index]:  # one resampling of the source either way (face 3 crosses the image border)
                np.testing.assert_array_equal(
                    a["image"], b["image"], err_msg=str((index, flip, scale, rotation))
                )
                continue
            mask = _valid_mask(a, (1024, 768))
            assert mask.mean() > 0.3
            diff = np.abs(_rgb(a) - _rgb(b))[mask]
            assert diff.mean() < 3, (index, flip, scale, rotation, diff.mean())
            assert np.percentile(diff, 99) < 25
    # the dataset's own augmentation path agrees too
    plain.set_epoch(2)
    cached.set_epoch(2)
    np.testing.assert_array_equal(plain[1]["heatmaps"], cached[1]["heatmaps"])


def test_device_targets_give_the_same_batch(textured: tuple[Path, list[Face]], tmp_path: Path) -> None:
    """uint8 crops + keypoints, normalised and encoded by `device_batch`, equal the host-side samples."""
    root, faces = textured
    cache = FaceCropCache(tmp_path / "cache", faces, root, progress=False)
    for source in (None, cache):
        host = WFLWDataset(faces, root, train=True, cache=source, heatmap_size=64, sigma=2.0)
        lean = WFLWDataset(
            faces, root, train=True, cache=source, heatmap_size=64, sigma=2.0, device_targets=True
        )
        host.set_epoch(3)
        lean.set_epoch(3)
        a = torch.utils.data.default_collate([host[i] for i in range(len(faces))])
        b = torch.utils.data.default_collate([lean[i] for i in range(len(faces))])
        assert "heatmaps" not in b and b["image"].dtype == torch.uint8
        images, heatmaps, weights = device_batch(b, torch.device("cpu"), S, 64, 2.0, channels_last=True)
        assert images.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(images, a["image"], rtol=0, atol=1e-5)
        torch.testing.assert_close(heatmaps, a["heatmaps"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights, a["target_weight"], rtol=0, atol=0)


def test_cache_reused_rebuilt_and_checked(textured: tuple[Path, list[Face]], tmp_path: Path) -> None:
    root, faces = textured
    directory = tmp_path / "cache"
    first = FaceCropCache(directory, faces, root, progress=False)
    again = FaceCropCache(directory, faces, root, progress=False)
    assert first.built and not again.built and again.key == first.key
    np.testing.assert_array_equal(again.crop(2), first.crop(2))
    restored = pickle.loads(pickle.dumps(again))  # what a spawned worker receives: no array copy
    assert restored._array is None
    np.testing.assert_array_equal(restored.crop(2), first.crop(2))
    fewer = FaceCropCache(directory, faces[:2], root, progress=False)
    assert fewer.built and len(fewer) == 2 and fewer.key != first.key
    with pytest.raises(ValueError, match="other faces"):
        WFLWDataset(faces, root, train=False, cache=fewer)
    with pytest.raises(ValueError, match="scale"):
        WFLWDataset(faces[:2], root, train=True, cache=fewer, augment=Augment(scale_range=(0.5, 1.5)))
    smaller = FaceCropCache(directory, faces[:2], root, input_size=128, progress=False)
    assert smaller.built and smaller.crop(0).shape == (smaller.sides[0], smaller.sides[0], 3)
    assert smaller.max_side < fewer.max_side
    with pytest.raises(ValueError, match="input size 128; this dataset's input size is 256"):
        WFLWDataset(faces[:2], root, train=False, cache=smaller)
    assert len(WFLWDataset(faces[:2], root, train=False, input_size=128, cache=smaller)) == 2


@pytest.mark.parametrize("meta", [b"", b'{"key": "trunc', b"\xff\xfe\x00", b"[1, 2]"])
def test_corrupt_cache_meta_is_rebuilt(
    textured: tuple[Path, list[Face]], tmp_path: Path, meta: bytes
) -> None:
    root, faces = textured
    directory = tmp_path / "cache"
    first = FaceCropCache(directory, faces, root, progress=False)
    (directory / "meta.json").write_bytes(meta)
    again = FaceCropCache(directory, faces, root, progress=False)
    assert again.built and again.key == first.key
    np.testing.assert_array_equal(again.affines, first.affines)
    assert not FaceCropCache(directory, faces, root, progress=False).built


def test_cache_meta_written_atomically(
    textured: tuple[Path, list[Face]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The meta is fsynced before its rename, and a failed write leaves no temporary file behind."""
    root, faces = textured
    directory = tmp_path / "cache"
    synced: set[tuple[int, int]] = set()  # (device, inode) of every fsynced file
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        stat = os.fstat(fd)
        synced.add((stat.st_dev, stat.st_ino))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "meta.json":
            stat = os.stat(src)
            assert (stat.st_dev, stat.st_ino) in synced, "meta renamed before fsync"
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        FaceCropCache(directory, faces, root, progress=False)
    assert sorted(p.name for p in directory.iterdir()) == ["crops.npy"]
    monkeypatch.setattr(os, "replace", real_replace)
    assert FaceCropCache(directory, faces, root, progress=False).built


def test_full_disk_under_the_cache_is_a_clear_error(
    textured: tuple[Path, list[Face]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crop file's blocks are reserved before the memmap writes into it (writing into a hole on a full
    disk is a SIGBUS without a word): a full disk is a NoSpaceError naming the folder and the bytes needed,
    and no temporary file stays. A filesystem that cannot reserve ahead builds as before."""
    root, faces = textured
    size = int((FaceCropCache(tmp_path / "reference", faces, root, progress=False).sides ** 2 * 3).sum())
    asked: list[int] = []

    def full(fd: int, offset: int, length: int) -> None:
        asked.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    directory = tmp_path / "cache"
    with pytest.raises(NoSpaceError) as error:
        FaceCropCache(directory, faces, root, progress=False)
    message = str(error.value)
    assert (
        f"no space left on the device of {directory} for the face-crop cache: it needs {size:,} bytes"
        in message
    )
    assert asked and asked[0] >= size  # the whole file, header included
    assert list(directory.iterdir()) == []

    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    assert FaceCropCache(directory, faces, root, progress=False).built


def test_temporary_files_of_dead_builds_are_removed(
    textured: tuple[Path, list[Face]], tmp_path: Path
) -> None:
    """A build killed mid-way leaves its crops.npy.HOST.PID.tmp (gigabytes at WFLW size, and named
    crops.npy.PID.tmp by older versions); the next build removes those of dead processes on this host and
    leaves a live process's and another host's."""
    root, faces = textured
    directory = tmp_path / "cache"
    directory.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid, host = int(dead.stdout), socket.gethostname()
    stale = [directory / f"crops.npy.{host}.{pid}.tmp", directory / f"crops.npy.{pid}.tmp"]
    kept = [directory / f"crops.npy.{host}.1.tmp", directory / f"crops.npy.other-host.{pid}.tmp"]
    for path in stale + kept:
        path.write_bytes(b"\0" * 1000)
    assert FaceCropCache(directory, faces, root, progress=False).built
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["crops.npy", "meta.json", *(p.name for p in kept)]
    )


def test_the_workers_fork_server_leaves_the_process_group() -> None:
    """The fork server that loader workers come from runs in a process group of its own, so a signal to
    the training's group reaches neither it nor its workers; what it forks still has Python's usual
    SIGTERM, so Process.terminate works (a Pool of synthesize once hung on workers that ignored it)."""
    script = textwrap.dedent(
        """
        import multiprocessing, os, time
        from hrnet_lib.data.loader import worker_options
        worker_options(1)
        child = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(60,))
        child.start()
        print(os.getpgid(0), os.getpgid(child.pid), flush=True)
        child.terminate()
        child.join(30)
        print(child.exitcode)
        """
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=120
    )
    ours, theirs, code = done.stdout.split()
    assert theirs != ours and int(code) == -signal.SIGTERM, done.stderr


def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    face = _face("e/missing.jpg", np.random.default_rng(0).uniform(0, 100, (98, 2)))
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg.*test:e/missing\.jpg"):
        WFLWDataset([face], tmp_path, train=False)[0]
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        FaceCropCache(tmp_path / "cache", [face], tmp_path, progress=False)
