"""Pictures of predictions and scores: colour masks, overlays and the confusion matrix.

All functions work on numpy arrays (RGB, uint8) and never touch the GPU; matplotlib is
used headless (Agg) and only for the confusion matrix.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np

from recallseg.atomic_files import atomic_write


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct colours for datasets without a palette: hues spaced by the golden ratio."""
    colours = []
    for c in range(num_classes):
        hue = (c * 0.618033988749895) % 1.0
        value = 0.95 if c % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def palette_array(palette: Sequence[Sequence[int]] | None, num_classes: int, ignore_colour: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """A 65536 x 3 uint8 lookup table: class id -> colour; ids without a colour (ignore) -> ``ignore_colour``."""
    colours = list(palette) if palette is not None else default_palette(num_classes)
    if len(colours) < num_classes:
        colours += default_palette(num_classes)[len(colours) :]
    table = np.empty((65536, 3), dtype=np.uint8)
    table[:] = np.asarray(ignore_colour, dtype=np.uint8)
    table[: len(colours)] = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    return table


def colorize(classes: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray | None, num_classes: int | None = None) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 RGB colours (``palette``: a list of colours or ``palette_array``'s table)."""
    classes = np.asarray(classes)
    if isinstance(palette, np.ndarray) and palette.shape == (65536, 3):
        table = palette
    else:
        table = palette_array(palette, num_classes if num_classes is not None else (len(palette) if palette is not None else int(classes.max()) + 1))
    return table[np.clip(classes, 0, 65535).astype(np.int64)]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend colour mask ``colours`` over RGB ``image`` (resized to the mask if sizes differ)."""
    import cv2

    if image.shape[:2] != colours.shape[:2]:
        image = cv2.resize(image, (colours.shape[1], colours.shape[0]), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    blended = image.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row (ground-truth class) divided by its sum: the share of its pixels predicted as each class.

    Rows of classes without pixels are all NaN.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), np.nan)


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write the row-normalised confusion matrix as a PNG: rows ground truth, columns prediction.

    Cells show percentages when there are at most 25 classes; rows of classes without
    ground-truth pixels are grey.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(class_names)
    values = row_normalised(matrix)
    count = len(names)
    size = max(4.0, 0.45 * count + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="lightgrey")
    shown = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the class's pixels")
    ax.set_xticks(range(count), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(count), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title(title or "confusion matrix (row-normalised)")
    if count <= 25:
        for t in range(count):
            for p in range(count):
                v = values[t, p]
                if np.isfinite(v) and v >= 0.005:
                    ax.text(p, t, f"{100 * v:.0f}", ha="center", va="center", fontsize=6, color="white" if v > 0.5 else "black")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
