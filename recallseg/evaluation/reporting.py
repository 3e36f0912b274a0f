"""What a run writes for people: metrics.json, TensorBoard scalars and the recall-weight heatmap."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from recallseg.atomic_files import atomic_write


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


def log_metrics(writer, metrics: dict, step: int, prefix: str = "val") -> None:
    """Means and per-class IoU, accuracy and precision as TensorBoard scalars."""
    for key in ("mIoU", "mAcc", "aAcc", "mPrecision"):
        if not math.isnan(metrics[key]):
            writer.add_scalar(f"{prefix}/{key}", metrics[key], step)
    for name, row in metrics["per_class"].items():
        for key, tag in (("iou", "IoU"), ("acc", "Acc"), ("precision", "Precision")):
            if not math.isnan(row[key]):
                writer.add_scalar(f"{prefix}/{tag}/{name}", row[key], step)


class PerClassHistory:
    """Per-class values over iterations (e.g. recall weights), drawn as a class x iteration heatmap."""

    def __init__(self, class_names: Sequence[str], max_columns: int = 512):
        self.class_names = list(class_names)
        self.columns: list[np.ndarray] = []
        self.max_columns = max_columns

    def append(self, values: torch.Tensor) -> None:
        self.columns.append(values.detach().float().cpu().numpy())
        if len(self.columns) > self.max_columns:  # keep the picture bounded: drop every other old column
            self.columns = self.columns[::2]

    def image(self, cell: int = 8) -> np.ndarray:
        """HWC uint8 heatmap, rows = classes, columns = logged iterations, viridis colours for [0, 1]."""
        from matplotlib import colormaps

        values = np.clip(np.nan_to_num(np.stack(self.columns, axis=1), nan=0.0), 0.0, 1.0)
        rgb = (colormaps["viridis"](values)[..., :3] * 255).astype(np.uint8)
        return np.repeat(np.repeat(rgb, cell, axis=0), max(1, cell // 2), axis=1)
