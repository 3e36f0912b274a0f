"""Loader workers start cleanly whatever this process did with OpenCV before."""

import cv2
import numpy as np
import torch

from recallseg.pipeline.loaders import WorkerLoader, worker_context, worker_init


class Frames(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return cv2.GaussianBlur(np.full((64, 64), float(index), np.float32), (5, 5), 1).mean()


def test_workers_start_after_opencv_ran_its_thread_pool_here():
    """A worker forked while OpenCV's pool threads wait would hang in worker_init's cv2.setNumThreads."""
    cv2.setNumThreads(2)
    image = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    for _ in range(3):
        cv2.GaussianBlur(image, (31, 31), 5)  # parallel: the pool's threads now wait on their condition variables
    loader = WorkerLoader(Frames(), batch_size=2, num_workers=1, worker_init_fn=worker_init, multiprocessing_context=worker_context(1), timeout=30)
    (batch,) = list(loader)
    assert batch.tolist() == [0.0, 1.0]
    assert cv2.getNumThreads() == 2  # this process keeps its pool
