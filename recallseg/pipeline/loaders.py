"""Data loaders: an endless, resumable, seeded training stream and a plain validation loader.

Batches leave the workers as uint8 images ``[N, H, W, 3]`` and masks ``[N, H, W]`` in the
dataset's ``mask_dtype()`` (uint8 for every built-in dataset: an eighth of int64's bytes through
shared memory, pinning and the host-to-device copy). Images become normalised floats
(``runtime.normalize.Normalizer``) and masks int64 (``runtime.device.to_target``) on the device.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import signal
import sys
import threading
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from recallseg.data.base import SegmentationDataset


class TrainingStream(Sampler):
    """Endless stream of ``(index, seed)`` keys for one rank, resumable at any sample.

    There is one global stream: epoch after epoch, a permutation of the dataset seeded by
    ``seed + epoch`` (PyTorch's ``randperm``, as ``DistributedSampler`` draws it). Rank r of N
    takes global positions r, r + N, r + 2N, ... straight across epoch boundaries, so the ranks
    see disjoint samples and N ranks with batch B see exactly what one rank with batch N*B sees,
    whatever the dataset's length (no padding). A sample's augmentation seed is a function of
    the run seed and its global position, so a run resumed at ``start`` (this rank's position)
    sees exactly the samples and augmentations an uninterrupted run would, for any number of
    workers.
    """

    def __init__(self, dataset_length: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if dataset_length == 0:
            raise ValueError("the training split is empty; check dataset.root and the split files")
        self.length, self.seed, self.rank, self.world_size, self.start = dataset_length, seed, rank, world_size, start

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position, epoch, order = self.start, None, []
        while True:
            global_position = position * self.world_size + self.rank
            sample_epoch, offset = divmod(global_position, self.length)
            if sample_epoch != epoch:
                epoch, order = sample_epoch, self._permutation(sample_epoch)
            seed = int(np.random.SeedSequence([self.seed, global_position]).generate_state(1)[0])
            yield order[offset], seed
            position += 1


def worker_init(worker_id: int) -> None:
    """Set up a DataLoader worker.

    - One core each: without this, every worker's OpenCV sizes its own thread pool to all the
      cores and they fight over them.
    - SIGTERM and SIGINT are ignored: a scheduler or Ctrl-C signals the whole process group, and
      a worker dying of it would make the training process fail ("DataLoader worker is killed
      by signal") before it could save. The training process stops the workers itself; if it
      dies, they notice and exit.
    """
    cv2.setNumThreads(1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


class WorkerLoader(DataLoader):
    """A DataLoader whose worker processes never inherit OpenCV's thread pool.

    A forked worker gets a copy of this process's memory but none of its threads. If OpenCV's
    pool threads were waiting on their condition variables at the fork, the worker's copy of
    that pool can never be torn down: its first ``cv2.setNumThreads`` (``worker_init``) or
    parallel OpenCV call waits forever. So the pool is stopped while the workers start, and
    restored after.
    """

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # joins the pool's threads: nothing of it is copied into the workers
        try:
            return super().__iter__()
        finally:
            cv2.setNumThreads(threads)


def worker_context(num_workers: int):
    """The multiprocessing context loader workers start in, named rather than inherited.

    A job that a launcher runs in a pool process (Hydra's joblib launcher uses loky) inherits the
    pool's default context, in which a DataLoader cannot start its workers ("'Process' object
    has no attribute 'env'"). Named here: fork on Linux (the platform's usual choice, and the
    cheapest: workers share the dataset's memory), spawn elsewhere.
    """
    if num_workers <= 0:
        return None
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _stop_workers_at_exit() -> None:
    """When a process exits, multiprocessing stops its daemonic children (loader workers are
    daemonic) with SIGTERM and then joins them. Loader workers ignore SIGTERM, so one whose loader
    is still referenced then (by the traceback of the error ending the run, say) would be waited
    for forever: daemonic children are killed first (SIGTERM would end them here anyway)."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # PyTorch's handler would report the killed workers as failed
    for child in children:
        child.kill()
        child.join(timeout=5)


# A multiprocessing finalizer, not an atexit hook: multiprocessing runs these before it stops the
# children, both at interpreter exit and when a process it started ends (a launcher's pool
# process, which never reaches the interpreter's atexit hooks before that join).
multiprocessing.util.Finalize(None, _stop_workers_at_exit, exitpriority=100)


def close_loader(batches) -> None:
    """Stop the workers of a loader iterator now (told to, they exit by themselves) rather than
    whenever it is garbage-collected: a pool process that runs job after job would keep them."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # only multi-process iterators have workers
    if shutdown is not None:
        shutdown()


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
    return WorkerLoader(
        dataset,
        batch_size=batch_size,
        sampler=stream,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=worker_init,
        multiprocessing_context=worker_context(num_workers),
    )

