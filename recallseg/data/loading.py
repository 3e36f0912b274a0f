"""Data loaders: an endless, resumable, seeded training stream and a plain validation loader.

Batches leave the workers as uint8 images ``[N, H, W, 3]`` and masks ``[N, H, W]`` in the
dataset's ``mask_dtype()`` (uint8 for every built-in dataset: an eighth of int64's bytes through
shared memory, pinning and the host-to-device copy). Images become normalised floats
(``engine.runtime.Normalizer``) and masks int64 (``engine.runtime.to_target``) on the device.
"""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from .base import SegmentationDataset


class TrainingStream(Sampler):
    """Endless stream of ``(index, seed)`` keys for one rank, resumable at any sample.

    Each epoch is a ``DistributedSampler`` permutation (``set_epoch`` per epoch, so every
    rank sees a disjoint shard and the order changes per epoch); a single process is simply
    rank 0 of 1. The augmentation seed of a sample is a function of the run seed and the
    sample's position in the stream, so a run resumed at ``start`` sees exactly the samples
    and augmentations that an uninterrupted run would, whatever the number of workers.
    """

    def __init__(self, dataset_length: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if dataset_length == 0:
            raise ValueError("the training split is empty; check dataset.root and the split files")
        self.shard = DistributedSampler(
            range(dataset_length), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_epoch = len(self.shard)
        epoch, offset = divmod(self.start, per_epoch)
        position = self.start
        while True:
            self.shard.set_epoch(epoch)
            for index in list(self.shard)[offset:]:
                # Seeded by the position in the *global* stream, so N ranks with batch B see
                # the same samples and augmentations as one rank with batch N*B.
                global_position = position * self.world_size + self.rank
                seed = int(np.random.SeedSequence([self.seed, global_position]).generate_state(1)[0])
                yield index, seed
                position += 1
            epoch, offset = epoch + 1, 0


def single_threaded_opencv(worker_id: int) -> None:
    """Each DataLoader worker is one core: without this, every worker's OpenCV sizes its own
    thread pool to all the cores and they fight over them."""
    cv2.setNumThreads(1)


def train_loader(
    dataset: SegmentationDataset,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    start_iteration: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless loader of training batches starting at ``start_iteration``."""
    stream = TrainingStream(len(dataset), seed, rank, world_size, start=start_iteration * batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=stream,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=single_threaded_opencv,
    )


def eval_loader(
    dataset: SegmentationDataset, batch_size: int, num_workers: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> DataLoader:
    """Validation/test loader; with several ranks each scores a disjoint shard (matrices are summed)."""
    if world_size > 1:  # a strided shard: unlike DistributedSampler, it never pads with duplicates
        dataset = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=single_threaded_opencv
    )
