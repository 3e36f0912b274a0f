"""Per-class pixel counts of a dataset split, computed once with a progress bar and cached."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic_files import atomic_write
from .base import SegmentationDataset

log = logging.getLogger(__name__)


class _MaskCounts(torch.utils.data.Dataset):
    """Yields per-sample class histograms so workers do the counting, not the main process."""

    def __init__(self, dataset: SegmentationDataset, num_classes: int, ignore_index: int):
        self.dataset, self.num_classes, self.ignore_index = dataset, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        _, mask = self.dataset[index]
        labels = mask[mask != self.ignore_index].ravel()
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = sorted(set(np.unique(labels[(labels < 0) | (labels >= self.num_classes)]).tolist()))
            raise ValueError(
                f"{self.dataset.describe(index)}: label values {bad} are outside 0..{self.num_classes - 1} "
                f"and are not the ignore index {self.ignore_index}"
            )
        return np.bincount(labels, minlength=self.num_classes).astype(np.int64)


def class_pixel_counts(dataset: SegmentationDataset, num_classes: int, ignore_index: int = 255, num_workers: int = 0) -> torch.Tensor:
    """Number of pixels of each class over ``dataset`` (ignored pixels excluded), as int64.

    Pass the dataset without random transforms so the counts describe the labels themselves.
    """
    loader = DataLoader(
        _MaskCounts(dataset, num_classes, ignore_index), batch_size=1, num_workers=num_workers, collate_fn=lambda batch: batch[0]
    )
    counts = np.zeros(num_classes, dtype=np.int64)
    for histogram in tqdm(loader, desc="class pixel counts", unit="img", leave=False):
        counts += histogram
    return torch.from_numpy(counts)


def statistics_key(dataset_cfg: Mapping[str, Any], split: str) -> str:
    """A short stable hash of the dataset config and split: the cache key of its statistics."""
    text = json.dumps({"dataset": dataset_cfg, "split": split}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_class_pixel_counts(
    dataset: SegmentationDataset,
    dataset_cfg: Mapping[str, Any],
    split: str,
    cache_dir: str | Path,
    num_workers: int = 0,
) -> torch.Tensor:
    """``class_pixel_counts`` of the split, read from ``cache_dir`` when computed before.

    The cache file is keyed by the dataset config (without transforms) and split, so a
    different root, size or seed never reuses stale counts.
    """
    cache_file = Path(cache_dir) / f"class_stats_{statistics_key(dataset_cfg, split)}.json"
    if cache_file.is_file():
        data = json.loads(cache_file.read_text())
        if len(data["pixel_counts"]) == dataset.num_classes:
            log.info("class pixel counts read from %s", cache_file)
            return torch.tensor(data["pixel_counts"], dtype=torch.int64)
    counts = class_pixel_counts(dataset, dataset.num_classes, dataset.ignore_index, num_workers)
    write_statistics(cache_file, dataset, counts, split, dataset_cfg)
    log.info("class pixel counts of the %s split written to %s", split, cache_file)
    return counts


def write_statistics(path: str | Path, dataset: SegmentationDataset, counts: torch.Tensor, split: str, dataset_cfg: Any = None) -> None:
    """Write counts and frequencies as JSON, atomically (a crash never leaves half a file)."""
    total = int(counts.sum())
    payload = {
        "dataset": type(dataset).__name__,
        "split": split,
        "config": dataset_cfg,
        "classes": list(dataset.classes),
        "pixel_counts": [int(c) for c in counts.tolist()],
        "frequencies": [int(c) / total if total else 0.0 for c in counts.tolist()],
    }
    with atomic_write(path) as handle:  # ranks may write the same file: each has its own temporary
        json.dump(payload, handle, indent=2, default=str)


def read_statistics(path: str | Path, num_classes: int) -> torch.Tensor:
    """Pixel counts from a JSON file written by ``write_statistics`` or ``recallseg-class-stats``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class statistics file {path} does not exist; run recallseg-class-stats or unset dataset.stats_file")
    counts = json.loads(path.read_text()).get("pixel_counts")
    if counts is None or len(counts) != num_classes:
        raise ValueError(f"class statistics file {path} must hold 'pixel_counts' with {num_classes} entries, got {counts!r}")
    return torch.tensor(counts, dtype=torch.int64)
