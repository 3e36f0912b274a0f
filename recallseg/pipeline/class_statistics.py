"""Per-class statistics of a dataset split, computed once with a progress bar and cached.

Two numbers per class c, both over the labelled (non-ignored) pixels:

- ``pixel_counts[c]``: the pixels of class c;
- ``image_pixels[c]``: the labelled pixels of the images in which c appears at all (what Eigen &
  Fergus's median-frequency balancing divides by: ``freq_c = pixel_counts[c] / image_pixels[c]``).

The cache file is keyed by the dataset config (without transforms and other keys that do not
change the labels), the split and, for file datasets, every label file's identity (path, size,
modification and change times, inode): relabelled or replaced files never reuse stale
statistics, even when their size and modification time were put back. A statistics file
records which label files it describes (``label_files.py``), and a run refuses one computed
from other labels. Computing them
leaves every random stream (torch, CUDA, numpy, python ``random``) as it was, so a run that
computes the statistics and one that reads them from the cache train identically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from recallseg.atomic_files import atomic_write
from recallseg.errors import ConfigError, DatasetError
from recallseg.config.schema import DATASET_RESERVED
from recallseg.data.base import SegmentationDataset
from recallseg.data.masks import to_mask_dtype
from recallseg.pipeline.label_files import check_label_files, label_files_record, label_files_signature
from recallseg.pipeline.loaders import WorkerLoader, worker_context, worker_init

log = logging.getLogger(__name__)

# Dataset keys that do not change the labels of a split, left out of the statistics' identity:
# the builder's own keys. train_split stays in, so statistics cached and files written so far
# keep their key and still match their config.
UNRELATED_KEYS = tuple(key for key in DATASET_RESERVED if key != "train_split")


@dataclass(frozen=True)
class ClassStatistics:
    """Per-class statistics of a training split (int64 tensors of C entries) and where they came from."""

    pixel_counts: torch.Tensor
    image_pixels: torch.Tensor | None  # None: a statistics file written before this was recorded
    source: str = ""


def statistics_config(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a dataset config that determines a split's labels (what statistics are computed for)."""
    return {k: v for k, v in dict(dataset_cfg).items() if k not in UNRELATED_KEYS}


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run the block and restore torch (CPU and CUDA), numpy and python ``random`` states afterwards.

    A DataLoader draws its base seed from torch's default generator even without workers, and a
    dataset may use the global streams: without this, computing statistics would shift every
    later random draw of a run compared with a run that reads them from the cache.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def label_mask(dataset: SegmentationDataset, index: int) -> np.ndarray:
    """The untransformed mask of sample ``index``: a file dataset's ``load_label`` decodes the label
    and reads only the image's header; other datasets load the whole sample."""
    if getattr(dataset, "transform", None) is None and hasattr(dataset, "load_label"):
        return to_mask_dtype(dataset.load_label(index), dataset.num_classes, dataset.ignore_index, dataset.describe(index), dataset.mask_dtype())
    return dataset[index][1]


def label_histogram(dataset: SegmentationDataset, index: int, num_classes: int, ignore_index: int) -> np.ndarray:
    """The pixels of each class (int64, ``num_classes`` entries) in the mask of sample ``index``, ignored ones left out."""
    mask = label_mask(dataset, index)
    labels = mask[mask != ignore_index].ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = sorted(set(np.unique(labels[(labels < 0) | (labels >= num_classes)]).tolist()))
        raise DatasetError(f"{dataset.describe(index)}: label values {bad} are outside 0..{num_classes - 1} and are not the ignore index {ignore_index}")
    return np.bincount(labels, minlength=num_classes).astype(np.int64)


class _MaskCounts(torch.utils.data.Dataset):
    """Yields per-sample class histograms so workers do the counting, not the main process."""

    def __init__(self, dataset: SegmentationDataset, num_classes: int, ignore_index: int):
        self.dataset, self.num_classes, self.ignore_index = dataset, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        return label_histogram(self.dataset, index, self.num_classes, self.ignore_index)


def _only(batch: list) -> Any:
    return batch[0]


def class_statistics(dataset: SegmentationDataset, num_classes: int, ignore_index: int = 255, num_workers: int = 0) -> ClassStatistics:
    """``ClassStatistics`` of ``dataset`` (ignored pixels excluded); every random stream is left as it was.

    Pass the dataset without random transforms so the statistics describe the labels themselves.
    """
    with preserved_random_state():
        loader = WorkerLoader(
            _MaskCounts(dataset, num_classes, ignore_index), batch_size=1, num_workers=num_workers, collate_fn=_only,
            worker_init_fn=worker_init, multiprocessing_context=worker_context(num_workers),
        )
        counts = np.zeros(num_classes, dtype=np.int64)
        image_pixels = np.zeros(num_classes, dtype=np.int64)
        for histogram in tqdm(loader, desc="class statistics", unit="img", leave=False):
            counts += histogram
            image_pixels += (histogram > 0) * histogram.sum()
    return ClassStatistics(torch.from_numpy(counts), torch.from_numpy(image_pixels), f"computed over {len(dataset)} images")


def warn_uniform_split(stats: ClassStatistics, classes: list[str], split: str) -> None:
    """Warn when every labelled pixel of a split is one class, or when no pixel is labelled at all."""
    present = [c for c, count in enumerate(stats.pixel_counts.tolist()) if count > 0]
    if not present:
        log.warning("the %s split has no labelled pixel: every pixel is ignored, so nothing can be learnt or scored (%s)", split, stats.source)
    elif len(present) == 1 and len(classes) > 1:
        name = classes[present[0]] if present[0] < len(classes) else present[0]
        log.warning("every labelled pixel of the %s split is class %s (%r): the other classes cannot be learnt (%s)", split, present[0], name, stats.source)


def statistics_key(dataset_cfg: Mapping[str, Any], split: str, label_files: list | None = None) -> str:
    """A short stable hash of the dataset config, split and label files: the cache key of its statistics."""
    text = json.dumps({"dataset": dataset_cfg, "split": split, "label_files": label_files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_class_statistics(
    dataset: SegmentationDataset, dataset_cfg: Mapping[str, Any], split: str, cache_dir: str | Path, num_workers: int = 0
) -> ClassStatistics:
    """``class_statistics`` of the split, read from ``cache_dir`` when computed before for the same
    config, split and label files (``label_files_signature``)."""
    dataset_cfg = statistics_config(dataset_cfg)
    cache_file = statistics_cache_file(dataset, dataset_cfg, split, cache_dir)
    if cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        counts, image_pixels = data.get("pixel_counts"), data.get("image_pixels")
        if counts is not None and image_pixels is not None and len(counts) == len(image_pixels) == dataset.num_classes:
            log.info("class statistics of the %s split read from the cache %s", split, cache_file)
            return ClassStatistics(
                torch.tensor(counts, dtype=torch.int64), torch.tensor(image_pixels, dtype=torch.int64), f"cache {cache_file}"
            )
    return cache_statistics(cache_file, dataset, class_statistics(dataset, dataset.num_classes, dataset.ignore_index, num_workers), split, dataset_cfg)


def statistics_cache_file(dataset: SegmentationDataset, dataset_cfg: Mapping[str, Any], split: str, cache_dir: str | Path) -> Path:
    """Where ``cached_class_statistics`` keeps the statistics of ``split`` (see the module docstring)."""
    return Path(cache_dir) / f"class_stats_{statistics_key(statistics_config(dataset_cfg), split, label_files_signature(dataset))}.json"


def cache_statistics(cache_file: Path, dataset: SegmentationDataset, stats: ClassStatistics, split: str, dataset_cfg: Mapping[str, Any]) -> ClassStatistics:
    """Write ``stats`` to the cache (a warning where it cannot be written: it only saves time); returns them."""
    try:
        write_statistics(cache_file, dataset, stats, split, statistics_config(dataset_cfg))
    except OSError as error:  # the cache only saves time: the statistics are computed and used all the same
        log.warning(
            "cannot write the class-statistics cache %s (%s): the statistics are used uncached and computed again next time; "
            "set paths.cache_dir (or $RECALLSEG_CACHE) to a writable directory to cache them",
            cache_file, error.strerror or error,
        )  # fmt: skip
        return stats
    log.info("class statistics of the %s split %s, written to the cache %s", split, stats.source, cache_file)
    return ClassStatistics(stats.pixel_counts, stats.image_pixels, f"{stats.source}, cached in {cache_file}")


def write_statistics(path: str | Path, dataset: SegmentationDataset, stats: ClassStatistics | torch.Tensor, split: str, dataset_cfg: Any = None) -> None:
    """Write counts, frequencies and the config they were computed for as JSON, atomically."""
    if isinstance(stats, torch.Tensor):
        stats = ClassStatistics(stats, None)
    counts = [int(c) for c in stats.pixel_counts.tolist()]
    total = sum(counts)
    payload = {
        "dataset": type(dataset).__name__,
        "split": split,
        "config": statistics_config(dataset_cfg) if isinstance(dataset_cfg, Mapping) else dataset_cfg,
        "classes": list(dataset.classes),
        "pixel_counts": counts,
        "frequencies": [c / total if total else 0.0 for c in counts],
    }
    if stats.image_pixels is not None:
        payload["image_pixels"] = [int(c) for c in stats.image_pixels.tolist()]
    record = label_files_record(dataset)
    if record is not None:
        payload["label_files"] = record
    with atomic_write(path) as handle:  # ranks may write the same file: each has its own temporary
        json.dump(payload, handle, indent=2, default=str)


def _differences(stored: Any, current: Mapping[str, Any]) -> list[str]:
    if not isinstance(stored, Mapping):
        return []
    keys = sorted(set(stored) | set(current), key=str)
    return [f"{k} {stored.get(k, '<absent>')!r} (file) vs {current.get(k, '<absent>')!r} (this run)" for k in keys if stored.get(k) != current.get(k)]


def read_statistics_file(
    path: str | Path, num_classes: int, dataset_cfg: Mapping[str, Any] | None = None, split: str | None = None,
    classes: list[str] | None = None, dataset: SegmentationDataset | None = None,
) -> ClassStatistics:
    """Statistics from a JSON file written by ``write_statistics`` or ``recallseg-class-stats``.

    With ``dataset_cfg`` the file's recorded config must be the one of this run (the keys that
    determine the labels; ``root`` included): statistics of another dataset, split or label
    mapping are refused with a ``ConfigError`` rather than silently weighting the wrong classes.
    With ``dataset`` (the split, untransformed) the label files it records must be the split's
    (``label_files.check_label_files``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("dataset.stats_file", f"{path} does not exist", "run recallseg-class-stats to write it, or set dataset.stats_file=null")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError("dataset.stats_file", f"{path} is not a readable JSON file ({error})", "rewrite it with recallseg-class-stats") from None
    counts = data.get("pixel_counts") if isinstance(data, dict) else None
    if counts is None or len(counts) != num_classes:
        raise ConfigError(
            "dataset.stats_file", f"{path} must hold 'pixel_counts' with {num_classes} entries, got {counts!r}",
            "rewrite it with recallseg-class-stats for this dataset",
        )
    if classes is not None and data.get("classes") is not None and list(data["classes"]) != list(classes):
        raise ConfigError(
            "dataset.stats_file", f"{path} was computed for the classes {data['classes']}, this run has {list(classes)}",
            "rewrite it with recallseg-class-stats for this dataset, or set dataset.stats_file=null",
        )
    if dataset_cfg is not None:
        stored, current = data.get("config"), statistics_config(dataset_cfg)
        if stored is None:
            log.warning("dataset.stats_file %s records no dataset config: cannot check it matches this run's dataset", path)
        else:
            stored = statistics_config(stored) if isinstance(stored, Mapping) else stored
            differences = _differences(stored, json.loads(json.dumps(current, default=str)))
            if differences or (split is not None and data.get("split") not in (None, split)):
                if split is not None and data.get("split") not in (None, split):
                    differences.insert(0, f"split {data.get('split')!r} (file) vs {split!r} (this run)")
                raise ConfigError(
                    "dataset.stats_file", f"{path} was computed for another dataset config: {'; '.join(differences)}",
                    "rewrite it with recallseg-class-stats using this run's dataset options, or set dataset.stats_file=null",
                )
    if dataset is not None:
        check_label_files(data.get("label_files"), dataset, path)
    image_pixels = data.get("image_pixels")
    return ClassStatistics(
        torch.tensor(counts, dtype=torch.int64),
        torch.tensor(image_pixels, dtype=torch.int64) if image_pixels is not None and len(image_pixels) == num_classes else None,
        f"dataset.stats_file {path}",
    )
