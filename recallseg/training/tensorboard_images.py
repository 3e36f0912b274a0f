"""Pictures in TensorBoard at each validation: a fixed handful of validation images with their
ground truth and the model's prediction in the dataset's palette, and the per-class precision
and recall as one bar chart.

Tags (``IMAGES`` tab): ``val_images/<k>/image``, ``val_images/<k>/ground_truth``,
``val_images/<k>/prediction`` for the k-th picked image (the same images at every validation,
spread evenly over the split), and ``val_images/per_class_precision_recall``. Ignored pixels are
black in the ground truth. Rank 0 draws them after the validation, outside the training step.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from recallseg.pipeline.class_statistics import preserved_random_state
from recallseg.evaluation.pictures import colorize, palette_array

PICTURES = 4


def picked_indices(length: int, count: int = PICTURES) -> list[int]:
    """``count`` indices spread evenly over ``range(length)`` (all of them for a shorter split)."""
    if length <= count:
        return list(range(length))
    return [int(round(i * (length - 1) / (count - 1))) if count > 1 else 0 for i in range(count)]


def precision_recall_chart(metrics: dict, classes: Sequence[str], title: str = "") -> np.ndarray:
    """Per-class precision and recall (= accuracy) of ``metrics`` as an HxWx3 uint8 bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def values(key: str) -> list[float]:
        row = metrics["per_class"]
        return [0.0 if math.isnan(row[name][key]) else 100 * row[name][key] for name in classes]

    x = np.arange(len(classes))
    fig, axis = plt.subplots(figsize=(max(6.0, 0.55 * len(classes) + 2), 3.6), dpi=100)
    axis.bar(x - 0.2, values("precision"), 0.4, label="precision")
    axis.bar(x + 0.2, values("acc"), 0.4, label="recall")
    axis.set_xticks(x, list(classes), rotation=40, ha="right", fontsize=8)
    axis.set_ylim(0, 100)
    axis.set_ylabel("percent")
    axis.set_title(title or "per-class precision and recall (validation)")
    axis.legend(loc="upper right", fontsize=8)
    return figure_pixels(fig)


def figure_pixels(fig) -> np.ndarray:
    """A matplotlib figure as HxWx3 uint8 pixels (the figure is closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return pixels


def per_class_heatmap(values: np.ndarray, classes: Sequence[str], iterations: Sequence[int], title: str) -> np.ndarray:
    """``values`` ``[classes, columns]`` in [0, 1] as an HxWx3 uint8 heatmap: a row per class, named on
    the y axis; a column per logged iteration, numbered on the x axis; a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8.0, 1.6 + 0.28 * len(classes)), dpi=100)
    shown = axis.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
    axis.set_yticks(np.arange(len(classes)), list(classes), fontsize=8)
    ticks = np.unique(np.linspace(0, len(iterations) - 1, min(len(iterations), 8)).round().astype(int))
    axis.set_xticks(ticks, [str(iterations[i]) for i in ticks], fontsize=8)  # columns may be unevenly spaced
    axis.set_xlabel("iteration")
    axis.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=axis, fraction=0.04, pad=0.02)
    return figure_pixels(fig)


class ValidationPictures:
    """``ValidationPictures(val_set, classes).log(writer, predict, iteration, metrics)``.

    ``predict`` maps a uint8 ``[1, H, W, 3]`` RGB batch to class ids ``[1, H, W]`` (the trainer
    passes its normaliser, model and validation ``Inference``)."""

    def __init__(self, val_set, classes: Sequence[str], count: int = PICTURES):
        self.classes = list(classes)
        self.val_set = val_set
        self.indices = picked_indices(len(val_set), count)
        self.samples: list | None = None  # (image HxWx3 uint8, mask HxW), loaded at the first log
        self.palette = palette_array(getattr(val_set, "palette", None), len(self.classes))

    def _load(self) -> list:
        # Loaded once, at the first validation rather than while the run starts (before its signal
        # handlers exist), and without touching the random streams a resume must reproduce.
        if self.samples is None:
            with preserved_random_state():
                self.samples = [self.val_set[i] for i in self.indices]
        return self.samples

    def log(self, writer, predict: Callable[[torch.Tensor], torch.Tensor], iteration: int, metrics: dict | None = None) -> None:
        for k, (image, mask) in enumerate(self._load()):
            with torch.no_grad():
                prediction = predict(torch.from_numpy(np.ascontiguousarray(image))[None])[0].cpu().numpy()
            for name, picture in (("image", image), ("ground_truth", colorize(mask, self.palette)), ("prediction", colorize(prediction, self.palette))):
                writer.add_image(f"val_images/{k}/{name}", np.ascontiguousarray(picture), iteration, dataformats="HWC")
        if metrics is not None:
            chart = precision_recall_chart(metrics, self.classes, f"per-class precision and recall, iteration {iteration}")
            writer.add_image("val_images/per_class_precision_recall", chart, iteration, dataformats="HWC")


def trainer_predictor(model, normalizer, runtime, inference) -> Callable[[torch.Tensor], torch.Tensor]:
    """What ``ValidationPictures.log`` calls in the trainer: normalise, infer as validation does, argmax."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        modes = [(module, module.training) for module in model.modules()]  # frozen BatchNorm stays frozen
        model.eval()
        try:
            with runtime.autocast():
                return inference(model, normalizer(images)).argmax(1)
        finally:
            for module, training in modes:
                module.training = training

    return predict
