"""The contract every recallseg dataset follows.

A dataset yields ``(image, mask)``: ``image`` an HxWx3 uint8 RGB array, ``mask`` an HxW
array of train ids with ``ignore_index`` for pixels that take no part, in the dataset's
``mask_dtype()``: the smallest integer type holding both (uint8 when they lie in 0..255; see
``masks.py``). Masks cross the loader in it and become int64 only on the device. With a
transform, both go through it (an albumentations-style callable taking ``image=`` and
``mask=`` keywords). The training loader asks for ``ds[(index, seed)]``: the seed makes the
random augmentation of that sample a pure function of its position in the sample stream,
so results do not depend on the number of workers and a resumed run sees the same data.

The file datasets (Cityscapes, Synthia, folder) build on :class:`FilePairDataset`: it reads
each (image file, label file) pair, checks the sizes agree, applies the optional dataset-level
``resize`` and maps raw label values to train ids.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from recallseg.data.files import ORIENTATIONS, exif_orientation, file_signature, image_size, read_image, read_label
from recallseg.data.masks import compact_mask_dtype, to_mask_dtype
from recallseg.data.resize import resize_image
from recallseg.errors import DatasetError

log = logging.getLogger("recallseg")
# What ``check_frame`` has warned about, by dataset, root, split and kind: a split is loaded by more
# than one dataset object in a run (training, class statistics), and said once.
_WARNED: set[tuple[str, str, str, str]] = set()


class SegmentationDataset(Dataset):
    """Base class: subclasses set ``classes`` and ``palette`` and implement ``__len__`` and ``load``."""

    classes: Sequence[str] = ()
    palette: Sequence[tuple[int, int, int]] | None = None
    ignore_index: int = 255

    def __init__(self, transform: Callable[..., dict[str, Any]] | None = None):
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask_dtype(self) -> np.dtype:
        """The dtype of this dataset's masks: the smallest holding every train id and the ignore index."""
        return compact_mask_dtype(self.num_classes, self.ignore_index)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """Return the untransformed ``(image uint8 HxWx3 RGB, mask HxW of integer train ids)`` of sample
        ``index``, the mask ideally in ``mask_dtype()`` already (wider ones are range-checked and converted)."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A human-readable name of sample ``index`` (a file path for file datasets), for error messages."""
        return f"{type(self).__name__}[{index}]"

    def load_for_transform(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """What the transform receives: ``load`` by default. File datasets hand over masks in a
        compact dtype (``CompactFrames``), so augmentation moves fewer bytes."""
        return self.load(index)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        image, mask = self.load_for_transform(index)
        if self.transform is not None:
            if seed is not None and hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(int(seed))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = np.ascontiguousarray(image)
        mask = to_mask_dtype(mask, self.num_classes, self.ignore_index, self.describe(index), self.mask_dtype())
        # Cached frames may be read-only views of a memory map: hand out writable arrays.
        return (image if image.flags.writeable else image.copy()), (mask if mask.flags.writeable else mask.copy())


@dataclass(frozen=True)
class Sample:
    """One image file and its label file (None for splits without public labels)."""

    image: Path
    label: Path | None


class CompactFrames:
    """``load`` and ``__getitem__`` on top of ``load_compact``, which may return read-only views.

    ``load_compact`` returns the mask in the dataset's ``mask_dtype()`` and the transform
    receives it as is: the frame cache hands over a view of its memory map, so augmentation
    reads the full frame without a copy. What leaves ``load`` and ``__getitem__`` is always
    writable.
    """

    def load_compact(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.load_compact(index)
        return (image if image.flags.writeable else image.copy()), (mask if mask.flags.writeable else mask.copy())

    def load_for_transform(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load_compact(index)


class FilePairDataset(CompactFrames, SegmentationDataset):
    """A dataset of (image file, label file) pairs.

    Subclasses fill ``self.samples`` and implement ``decode_label(raw, path)`` (raw label
    array -> train ids in ``mask_dtype()``, usually through a lookup table). ``read_raw_label(path)`` reads the raw
    array (override for multi-channel labels).

    Args:
        resize: optional ``[height, width]``: every frame is resized to it when loaded (image
            bilinear by ``data.resize``, the resize of the model's input pipeline; label nearest),
            so a cache stores the resized frames. For protocols that
            only resize (the paper's Synthia one) this is the cheapest place to do it.
    """

    def __init__(self, root: str | os.PathLike, split: str, transform=None, resize: Sequence[int] | None = None):
        super().__init__(transform)
        self.root = Path(root).expanduser()
        self.split = split
        if resize is not None:
            if len(resize) != 2 or min(int(v) for v in resize) <= 0:
                raise ValueError(f"{type(self).__name__}: resize must be [height, width] with positive sizes, got {resize}")
            resize = (int(resize[0]), int(resize[1]))
        self.resize = resize
        self.samples: list[Sample] = []

    # -- to override --------------------------------------------------------------------------

    def read_raw_label(self, path: Path) -> np.ndarray:
        return read_label(path)

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:  # pragma: no cover - abstract
        """Map the raw label array to train ids in ``mask_dtype()`` (ignore_index for ignored pixels)."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """Constructor options that change the loaded frames (part of the cache key)."""
        return {}

    # -- the contract ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        sample = self.samples[index]
        return str(sample.image) if sample.label is None else f"{sample.image} (label {sample.label})"

    def load_compact(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 HxWx3 RGB, mask HxW in mask_dtype())`` of sample ``index``, checked and resized."""
        image = read_image(self.samples[index].image)
        mask = self.load_label(index, image.shape[:2])
        if self.resize is not None and image.shape[:2] != self.resize:
            image = resize_image(image, self.resize)
        return image, mask

    def load_label(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """The mask of sample ``index`` as ``load`` returns it, its size checked against the image's
        ``(height, width)``: ``size``, or the image file's header (no image pixel decoded)."""
        sample = self.samples[index]
        height, width = size if size is not None else image_size(sample.image)
        if sample.label is None:
            return np.full(self.resize or (height, width), self.ignore_index, dtype=self.mask_dtype())
        raw = self.read_raw_label(sample.label)
        if raw.shape[:2] != (height, width):
            raise DatasetError(
                f"image and label sizes differ: {sample.image} is {width}x{height} (WxH) but "
                f"{sample.label} is {raw.shape[1]}x{raw.shape[0]}"
            )
        self.check_raw_label(raw, sample.label)
        if self.resize is not None and self.resize != (height, width):
            raw = cv2.resize(raw, (self.resize[1], self.resize[0]), interpolation=cv2.INTER_NEAREST)
        mask = self.decode_label(raw, sample.label)
        self.check_frame(sample, mask)
        return mask

    # Said after a frame whose label holds one value only (a dataset may know a likely cause).
    uniform_label_hint = ""

    def check_frame(self, sample: Sample, mask: np.ndarray) -> None:
        """Warn, once per kind and split, about a label that is all one class or all ignored, and
        about an image whose EXIF orientation is not applied (images and labels are read as stored)."""
        key = (type(self).__name__, str(self.root), self.split)
        if (*key, "uniform") not in _WARNED and mask.size and mask.min() == mask.max():
            value = int(mask.flat[0])
            if value == self.ignore_index:
                what = f"every pixel of {sample.label} is ignored ({value}): the frame takes no part in training or scoring"
            else:
                name = self.classes[value] if 0 <= value < len(self.classes) else "?"
                what = f"every pixel of {sample.label} is class {value} ({name})"
            _WARNED.add((*key, "uniform"))
            log.warning("%s %s: %s%s; further such frames of this split are not reported", type(self).__name__, self.split, what, self.uniform_label_hint)
        if (*key, "orientation") not in _WARNED:
            orientation = exif_orientation(sample.image)
            if orientation in ORIENTATIONS:
                _WARNED.add((*key, "orientation"))
                log.warning(
                    "%s %s: %s carries EXIF orientation %d (%s), which recallseg does not apply, to images as to labels: its label "
                    "must match the pixels as stored; if it was drawn on the rotated view, rotate the image file itself (e.g. "
                    "PIL.ImageOps.exif_transpose); further such images of this split are not reported",
                    type(self).__name__, self.split, sample.image, orientation, ORIENTATIONS[orientation],
                )  # fmt: skip

    def check_raw_label(self, raw: np.ndarray, path: Path) -> None:
        """Raise if ``raw`` holds unknown values (called on the full-size label, before any resize)."""

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``index`` as ``load`` returns it, without decoding when possible."""
        if self.resize is not None:
            return self.resize
        return image_size(self.samples[index].image)

    def cache_signature(self) -> dict[str, Any]:
        """Everything that determines the loaded frames: class, options and the files (``file_signature``: size, times, inode)."""
        files = [None if path is None else file_signature(path) for sample in self.samples for path in (sample.image, sample.label)]
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "split": self.split,
            # A cache of frames resized by OpenCV (before data.resize) is stale: its key said only the size.
            "resize": None if self.resize is None else {"size": self.resize, "by": "data.resize"},
            "ignore_index": self.ignore_index,
            "options": self.options(),
            "files": files,
        }
