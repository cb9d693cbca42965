"""Which faces a training step sees: the train/validation split and the epoch order dealt to processes."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


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


def deal(
    size: int, global_batch: int, world: int, seed: int, epoch: int = 0, step: int = 0
) -> list[list[int]]:
    """The faces of global batch `step` of `epoch` that each of `world` processes trains on: one list of
    face indices per rank, as that rank's `EpochSampler` yields them."""
    if global_batch % world:
        raise ValueError(f"a world of {world} processes cannot share a global batch of {global_batch}")
    share = global_batch // world
    shares = []
    for rank in range(world):
        sampler = EpochSampler(size, global_batch, world, rank, seed)
        sampler.set_epoch(epoch)
        shares.append(list(sampler)[step * share : (step + 1) * share])
    return shares
