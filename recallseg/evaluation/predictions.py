"""Saving predictions as image files, one PNG per sample.

Formats (``predictions.format``):

- ``index``: class ids (train ids), 8-bit PNG (16-bit with more than 256 classes);
- ``color``: the dataset's palette colours, RGB PNG;
- ``overlay``: the colours blended over the input image;
- ``cityscapes``: Cityscapes *label ids* (not train ids), 8-bit PNG, as the official
  evaluator (``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) reads them. It
  matches a prediction to ``CITY_SEQ_FRAME_gtFine_labelIds.png`` by the pattern
  ``CITY_SEQ_FRAME*.png`` anywhere under its results folder, so files are named after the
  image (``frankfurt_000000_000019_leftImg8bit.png``).

A file's name is the sample's image path relative to the dataset's image folder, extension
``.png`` (``evaluation.samples.sample_names``). Saving copies each prediction to the host: it is
opt-in (``predictions.save=true``) and the only host synchronisation of an evaluation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Sequence

import cv2
import numpy as np
import torch

from recallseg.atomic_files import atomic_write
from recallseg.data.cityscapes import CLASSES as CITYSCAPES_CLASSES
from recallseg.data.cityscapes import train_ids_to_label_ids
from recallseg.config.schema import PREDICTIONS, check_value
from recallseg.evaluation.pictures import colorize, overlay, palette_array

PREDICTION_FORMATS = PREDICTIONS["format"].choices


class PredictionWriter:
    """Writes predictions of one dataset in one format under ``directory``.

    Args:
        directory: output folder (created).
        format: one of ``PREDICTION_FORMATS``.
        names: file name (without extension, may contain ``/``) per dataset index.
        classes: the model's class names (``cityscapes`` needs the 19 Cityscapes classes).
        palette: class colours for ``color``/``overlay`` (None: generated ones).
        alpha: mask opacity of ``overlay``.
    """

    def __init__(
        self,
        directory: str | Path,
        format: str,
        names: Sequence[str],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        alpha: float = 0.5,
    ):
        check_value("predictions.format", format, PREDICTIONS["format"])
        if format == "cityscapes" and tuple(classes) != CITYSCAPES_CLASSES:
            raise ValueError(
                f"predictions.format=cityscapes writes Cityscapes label ids and needs a model of the 19 Cityscapes classes; "
                f"this one has {len(classes)} ({', '.join(list(classes)[:5])}...): use format index, color or overlay"
            )
        self.directory = Path(directory)
        self.format = format
        self.names = list(names)
        self.num_classes = len(classes)
        self.table = palette_array(palette, self.num_classes)
        self.alpha = float(alpha)
        self.written = 0

    @property
    def needs_image(self) -> bool:
        """Whether ``write`` needs the input image (overlays)."""
        return self.format == "overlay"

    def path(self, index: int) -> Path:
        return self.directory / f"{self.names[index]}.png"

    def encode(self, prediction: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
        """The array written for ``prediction`` (HxW class ids): grey ids, or RGB colours."""
        if self.format == "index":
            return prediction.astype(np.uint8 if self.num_classes <= 256 else np.uint16)
        if self.format == "cityscapes":
            return train_ids_to_label_ids(prediction)
        colours = colorize(prediction, self.table)
        if self.format == "color":
            return colours
        if image is None:
            raise ValueError("predictions.format=overlay needs the input image")
        return overlay(image, colours, self.alpha)

    def write(self, prediction: torch.Tensor | np.ndarray, index: int, image: np.ndarray | None = None) -> Path:
        """Write the prediction (HxW class ids) of dataset sample ``index``; returns the file."""
        if isinstance(prediction, torch.Tensor):
            prediction = prediction.to("cpu", torch.int32).numpy()
        array = self.encode(np.asarray(prediction), image)
        path = self.path(index)
        write_png(path, array)
        self.written += 1
        return path


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write an HxW (ids) or HxWx3 RGB array as PNG, creating folders, atomically: a failed write
    leaves no partial PNG and raises an ``OutputError`` naming the file."""
    path = Path(path)
    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, encoded = cv2.imencode(".png", data)
    if not ok:
        raise ValueError(f"cannot encode a PNG for {path} from a {array.dtype} array of shape {array.shape}")
    with atomic_write(path, "wb") as handle:
        handle.write(encoded.tobytes())
    return path


def unique_output_names(relative_paths: Sequence[str | Path]) -> list[str]:
    """One output name (without ``.png``) per input file, given relative to the input folder.

    A name is the path without its extension (``street.jpg`` -> ``street``), except for inputs
    that would share one (``a.jpg`` and ``a.png``): those keep their extension (``a.jpg``,
    ``a.png``, written as ``a.jpg.png``, ``a.png.png``), so no prediction overwrites another.
    Names are compared ignoring case, as on case-insensitive file systems.
    """
    paths = [PurePosixPath(Path(p).as_posix()) for p in relative_paths]
    stems = [p.with_suffix("").as_posix() for p in paths]
    shared = Counter(stem.casefold() for stem in stems)
    names = [p.as_posix() if shared[stem.casefold()] > 1 else stem for p, stem in zip(paths, stems)]
    clashes = [name for name, count in Counter(n.casefold() for n in names).items() if count > 1]
    if clashes:  # e.g. a.jpg and a.png next to a.jpg.png
        raise ValueError(f"input files {', '.join(sorted(clashes)[:5])} would write the same prediction file; rename one of them")
    return names
