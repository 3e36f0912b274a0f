"""Checking a dataset's files before anything trains on them: every split, every problem at once.

For the training split, the validation split and the split evaluation scores (``dataset.split``),
the check lists the split (a split that is empty or whose images and masks do not pair is a
problem), then reads every label and every image's header, never an image's pixels
(``FilePairDataset.load_label``, the reading that training and the class statistics do):

- problems: an unreadable file, a label value outside the classes and the ignore index, an image
  and a label of different sizes, an empty split;
- warnings: classes absent from a split (never learnt in the training split; not measured in
  another), a split without a labelled pixel.

The training split's per-class counts are the class statistics (``class_statistics.py``): the
check writes them to their cache, so a run does not read the labels twice. A clean split's
result is cached under ``paths.cache_dir``, keyed like the statistics by the dataset options
that determine the frames and every image and label file's identity (``data.files.file_signature``):
checking unchanged files again costs one ``stat`` per file. Datasets without files (synthetic)
have nothing to check. Like the statistics, the check leaves every random stream as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from recallseg.atomic_files import atomic_write
from recallseg.data.base import SegmentationDataset
from recallseg.data.files import file_signature
from recallseg.errors import DatasetError, UserError, as_user_error, one_line
from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.class_statistics import (
    ClassStatistics, cache_statistics, label_histogram, preserved_random_state, statistics_cache_file, statistics_config,
)  # fmt: skip
from recallseg.pipeline.loaders import WorkerLoader, worker_context, worker_init

log = logging.getLogger("recallseg")
FORMAT_VERSION = 1


@dataclass
class SplitCheck:
    """What the check found in one split: ``key`` is the option naming it (``dataset.val_split``)."""

    key: str
    split: str
    frames: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cached: bool = False

    @property
    def title(self) -> str:
        return f"{self.split} ({self.key}={self.split})"


@dataclass
class DataCheck:
    """The check of every split of a dataset (``check_dataset``)."""

    where: str  # the dataset class and its root
    splits: list[SplitCheck]

    @property
    def problems(self) -> int:
        return sum(len(split.problems) for split in self.splits)

    def report(self) -> list[str]:
        """The problems and warnings, one per line, split by split."""
        lines = [f"dataset check of {self.where}:"]
        for split in self.splits:
            lines.append(f"  {split.title}: {split.frames} frames, {len(split.problems)} problem(s), {len(split.warnings)} warning(s)")
            lines += [f"    problem: {text}" for text in split.problems] + [f"    warning: {text}" for text in split.warnings]
        return lines

    def summary(self) -> str:
        """One paragraph: the splits, their frames, the warnings (for a clean check)."""
        splits = ", ".join(f"{split.title} {split.frames} frames" + (" (unchanged since checked)" if split.cached else "") for split in self.splits)
        warnings = [f"{split.split}: {text}" for split in self.splits for text in split.warnings]
        said = f"dataset check of {self.where}: {splits}; every label and image header read, no problem"
        return said + (f"; warnings: {'; '.join(warnings)}" if warnings else "")

    def error(self) -> DatasetError:
        count = sum(1 for split in self.splits if split.problems)
        return DatasetError(
            f"dataset check: {self.problems} problem(s) in {count} split(s) of {self.where} (listed above); fix them and check again "
            "(recallseg-check-data), or set dataset.check=false to train without the check"
        )


class _FrameCheck(torch.utils.data.Dataset):
    """Per sample, in the loader's workers: ``(class histogram, None)`` or ``(None, the problem)``."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray | None, str | None]:
        try:
            return label_histogram(self.dataset, index, self.dataset.num_classes, self.dataset.ignore_index), None
        except Exception as error:
            if as_user_error(error) is None:
                raise  # a bug, not the user's file
            return None, one_line(as_user_error(error))


def _only(batch: list) -> Any:
    return batch[0]


def dataset_splits(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, split)`` of the splits a run reads: training, validation and the one evaluation scores."""
    found: dict[str, str] = {}
    for key in ("train_split", "val_split", "split"):
        if cfg.get(key) and cfg[key] not in found:
            found[cfg[key]] = f"dataset.{key}"
    return [(key, split) for split, key in found.items()]


def _files(dataset: SegmentationDataset) -> list | None:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    return [[file_signature(path) if path is not None else None for path in (sample.image, sample.label)] for sample in samples]


def _absent(dataset: SegmentationDataset, counts: np.ndarray, key: str) -> list[str]:
    if not counts.any():
        return ["no labelled pixel: every pixel is ignored, nothing can be learnt or scored"]
    absent = [f"{dataset.classes[c]} ({c})" for c in np.flatnonzero(counts == 0)]
    if not absent:
        return []
    effect = "they cannot be learnt" if key == "dataset.train_split" else "their IoU and recall are not measured"
    return [f"{len(absent)} class(es) never appear: {', '.join(absent)}; {effect}"]


def check_split(cfg: Mapping[str, Any], key: str, split: str, cache_dir: str | Path | None, num_workers: int = 0) -> SplitCheck:
    """Check one split of the dataset ``cfg`` (see the module docstring); a clean result is cached."""
    result = SplitCheck(key, split)
    try:
        dataset = build_dataset({**cfg, "cache": False}, split, transform=None)  # the files themselves
    except UserError as error:  # an empty split, images without masks, a missing folder
        result.problems.append(one_line(error))
        return result
    result.frames = len(dataset)
    files = _files(dataset)
    if files is None:
        return result  # generated frames: no file to check
    text = json.dumps({"version": FORMAT_VERSION, "dataset": statistics_config(cfg), "split": split, "files": files}, sort_keys=True, default=str)
    cache_file = Path(cache_dir) / f"data_check_{hashlib.sha256(text.encode()).hexdigest()[:16]}.json" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            counts = np.asarray(json.loads(cache_file.read_text())["pixel_counts"], dtype=np.int64)
            if len(counts) == dataset.num_classes:
                result.cached, result.warnings = True, _absent(dataset, counts, key)
                return result
        except (OSError, ValueError, KeyError, TypeError):
            pass  # checked again, and rewritten
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    image_pixels = np.zeros(dataset.num_classes, dtype=np.int64)
    with preserved_random_state():
        loader = WorkerLoader(
            _FrameCheck(dataset), batch_size=1, num_workers=num_workers, collate_fn=_only, worker_init_fn=worker_init,
            multiprocessing_context=worker_context(num_workers),
        )  # fmt: skip
        for histogram, problem in tqdm(loader, desc=f"checking {split}", unit="frame", leave=False):
            if problem is not None:
                result.problems.append(problem)
            else:
                counts += histogram
                image_pixels += (histogram > 0) * histogram.sum()
    if result.problems:
        return result
    result.warnings = _absent(dataset, counts, key)
    if cache_file is not None:
        if key == "dataset.train_split":  # the class statistics a run would read the labels again for
            stats = ClassStatistics(torch.from_numpy(counts), torch.from_numpy(image_pixels), f"computed over {len(dataset)} images")
            cache_statistics(statistics_cache_file(dataset, cfg, split, cache_dir), dataset, stats, split, cfg)
        try:
            with atomic_write(cache_file) as handle:
                json.dump({"split": split, "frames": len(dataset), "pixel_counts": counts.tolist()}, handle)
        except OSError as error:  # only saves time
            log.warning("cannot write the dataset check's cache %s (%s): the files are read again next time", cache_file, error.strerror or error)
    return result


def check_dataset(cfg: Mapping[str, Any], cache_dir: str | Path | None, num_workers: int = 0) -> DataCheck:
    """Check every split a run reads (``dataset_splits``) of the dataset ``cfg`` (resolved)."""
    where = f"{str(cfg.get('_target_', 'the dataset')).rsplit('.', 1)[-1]}" + (f" at {cfg['root']}" if cfg.get("root") else "")
    return DataCheck(where, [check_split(cfg, key, split, cache_dir, num_workers) for key, split in dataset_splits(cfg)])


def check_before_training(cfg: Mapping[str, Any], cache_dir: str | Path, num_workers: int = 0) -> None:
    """``dataset.check`` (on unless false): every problem logged, then one error stops the run before its first step."""
    if cfg.get("check") is False:
        return
    checked = check_dataset(cfg, cache_dir, num_workers)
    if checked.problems:
        for line in checked.report():
            log.error("%s", line)
        raise checked.error()
    warned = any(split.warnings for split in checked.splits)
    log.log(logging.WARNING if warned else logging.INFO, "%s", checked.summary())
