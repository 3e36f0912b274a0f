"""The files a training or evaluation run leaves in its directory, each written atomically
(``atomic_files``): a failed write keeps the previous file and leaves no partial one.

- ``metrics.json``: the schema of training runs (mIoU, mAcc, aAcc, mPrecision, per_class,
  iteration, checkpoint, run) plus the split, the inference settings, the evaluation options
  and the checkpoint's training run (``training_run``);
- ``per_class.csv``: one row per class (fractions; empty cells for n/a);
- ``confusion_matrix.png``: row-normalised, class names on both axes;
- ``confusion_matrix.csv``: the raw pixel counts (rows ground truth, columns prediction).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recallseg.evaluation.pictures import save_confusion_matrix
from recallseg.atomic_files import atomic_write

PER_CLASS_COLUMNS = ("class", "iou", "acc", "precision", "pixels")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def write_metrics_json(path: str | Path, metrics: dict, **extra: Any) -> None:
    """metrics.json: fractions in [0, 1]; NaN (class absent) becomes null so the file is valid JSON."""
    with atomic_write(path) as handle:
        json.dump({**_finite_or_none(metrics), **extra}, handle, indent=2)


def write_per_class_csv(path: str | Path, metrics: dict) -> Path:
    """``class,iou,acc,precision,pixels`` rows (fractions in [0, 1]; n/a values left empty)."""
    path = Path(path)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PER_CLASS_COLUMNS)
        for name, row in metrics["per_class"].items():
            cells = ["" if isinstance(row[key], float) and math.isnan(row[key]) else f"{row[key]:.6f}" for key in ("iou", "acc", "precision")]
            writer.writerow([name, *cells, row["pixels"]])
    return path


def write_confusion_csv(path: str | Path, matrix: np.ndarray, class_names: Sequence[str]) -> Path:
    path = Path(path)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ground truth \\ prediction", *class_names])
        for name, row in zip(class_names, np.asarray(matrix).tolist()):
            writer.writerow([name, *row])
    return path


def write_evaluation_report(directory: str | Path, metrics: dict, matrix: np.ndarray, class_names: Sequence[str], **extra: Any) -> dict[str, Path]:
    """Write every file of the module docstring into ``directory``; returns them by name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"metrics.json": directory / "metrics.json"}
    write_metrics_json(files["metrics.json"], metrics, **extra)
    files["per_class.csv"] = write_per_class_csv(directory / "per_class.csv", metrics)
    files["confusion_matrix.csv"] = write_confusion_csv(directory / "confusion_matrix.csv", matrix, class_names)
    split = extra.get("split")
    title = "confusion matrix (row-normalised)" + (f", {split} split" if split else "")
    files["confusion_matrix.png"] = save_confusion_matrix(matrix, class_names, directory / "confusion_matrix.png", title=title)
    return files
