"""Reading image/label file pairs from disk, with errors that name the file.

Everything a file-backed dataset shares lives here:

- ``read_image`` / ``read_label``: decode a PNG (or any format OpenCV reads) into uint8 RGB or
  the raw label array, raising :class:`DatasetError` naming the file when it is missing,
  unreadable or corrupt;
- ``pair_files``: match images with labels by key, naming every image without a label and
  every label without an image;
- ``layout_error``: the error for an empty or wrong root, showing the expected layout next to
  what is actually there;
- ``check_label_values``: reject label values outside the known ids, naming the file and the
  values, before anything reaches the model;
- :class:`FilePairDataset`: the base class of the file datasets (Cityscapes, Synthia, folder):
  it reads the pair, checks the sizes agree, applies the optional dataset-level ``resize``
  and maps raw label values to train ids through a lookup table.

Decoding stays in uint8/uint16 with OpenCV; there is no float work on the CPU.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np

from recallseg.errors import UserError
from recallseg.data.base import SegmentationDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(UserError, ValueError):
    """A dataset on disk is not what recallseg expects; the message says which file and why."""


# --------------------------------------------------------------------------------------------
# Decoding


def _imread(path: Path, flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file not found: {path}")
    # cv2.imread cannot open non-ASCII paths on every platform; imdecode of the bytes can.
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise DatasetError(f"cannot decode {path}: the file is empty")
    array = cv2.imdecode(data, flags)
    if array is None:
        raise DatasetError(f"cannot decode {path}: unreadable or corrupt image file ({data.size} bytes)")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into an HxWx3 uint8 RGB array (16-bit images are scaled to 8 bits)."""
    image = _imread(Path(path), cv2.IMREAD_COLOR_RGB)
    if image.dtype != np.uint8:  # IMREAD_COLOR already converts depth; defensive for exotic builds
        raise DatasetError(f"{path}: expected an 8-bit image, decoded {image.dtype}")
    return image


def read_label(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Decode a label file unchanged (8 or 16 bit) into an HxW integer array.

    ``channel`` picks one channel of a multi-channel label in OpenCV's BGR order (Synthia keeps
    the class in R, which is channel 2). Without it the label must have one channel.
    """
    if channel is None and png_colour_type(path) == PNG_PALETTE:
        return read_palette_indices(Path(path))
    label = _imread(Path(path), cv2.IMREAD_UNCHANGED)
    if label.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"label {path}: expected 8- or 16-bit integers, decoded {label.dtype}")
    if channel is None:
        if label.ndim != 2:
            raise DatasetError(
                f"label {path} has {label.shape[2]} channels: it looks like a colour-coded mask, not a map of class ids; "
                "convert it to a single-channel 8-bit PNG whose pixel values are the class indices (each colour -> its class's "
                "position in the class list), or to a palette (mode P) PNG of those indices"
            )
        return label
    if label.ndim != 3 or label.shape[2] <= channel:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise DatasetError(f"label {path} has {channels} channel(s); expected the class id in channel {channel} (BGR order)")
    return np.ascontiguousarray(label[:, :, channel])


PNG_PALETTE = 3  # the IHDR colour type of indexed-colour PNGs


def png_colour_type(path: str | os.PathLike) -> int | None:
    """The IHDR colour type of a PNG (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), or None for other files."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None  # read_label's decoding names the problem
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def read_palette_indices(path: Path) -> np.ndarray:
    """The pixel indices of a palette (mode P) PNG, as Pascal VOC stores class ids, ignoring the colours.

    OpenCV would expand the palette to colours; Pillow keeps the indices."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode != "P":
                raise DatasetError(f"label {path}: expected a palette PNG, Pillow reads mode {image.mode}")
            return np.array(image, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(f"cannot decode {path}: unreadable or corrupt palette PNG ({type(error).__name__}: {error})") from None


def png_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG header without decoding, or None for other files."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


# --------------------------------------------------------------------------------------------
# Layout


def describe_directory(path: Path, limit: int = 12) -> str:
    """A short listing of ``path`` for error messages (``does not exist`` when it does not)."""
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a directory"
    entries = sorted(os.listdir(path))
    if not entries:
        return f"{path} is empty"
    shown = [name + ("/" if (path / name).is_dir() else "") for name in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{path} contains: " + ", ".join(shown) + more


def layout_error(dataset: str, root: Path, expected: str, problem: str, found: Path | None = None, hint: str = "") -> DatasetError:
    """The error for a root that does not hold the expected layout."""
    message = (
        f"{dataset}: {problem}\n"
        f"expected layout under root={root}:\n{expected.rstrip()}\n"
        f"found: {describe_directory(found if found is not None else root)}\n"
        "set the root with dataset.root=/path/to/data or the RECALLSEG_DATA environment variable (see data/README.md)"
    )
    if hint:
        message += f"\nhint: {hint}"
    return DatasetError(message)


def list_files(directory: Path, suffix: str | Sequence[str], recursive: bool = False) -> list[Path]:
    """Files of ``directory`` whose name ends with ``suffix`` (sorted)."""
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in Path(directory).glob(pattern) if p.name.endswith(suffixes) and p.is_file())


def pair_files(
    dataset: str,
    images: Mapping[str, Path],
    labels: Mapping[str, Path],
    expected_label: Callable[[str], str] | None = None,
    expected_image: Callable[[str], str] | None = None,
    limit: int = 5,
) -> list[tuple[Path, Path]]:
    """Pair ``images`` with ``labels`` by key (sorted by key); any unmatched file is an error naming it."""
    missing_labels = sorted(set(images) - set(labels))
    missing_images = sorted(set(labels) - set(images))
    problems = []
    if missing_labels:
        lines = [f"  {images[k]}" + (f" (expected label {expected_label(k)})" if expected_label else "") for k in missing_labels[:limit]]
        more = f"\n  ... and {len(missing_labels) - limit} more" if len(missing_labels) > limit else ""
        problems.append(f"{len(missing_labels)} image(s) without a label:\n" + "\n".join(lines) + more)
    if missing_images:
        lines = [f"  {labels[k]}" + (f" (expected image {expected_image(k)})" if expected_image else "") for k in missing_images[:limit]]
        more = f"\n  ... and {len(missing_images) - limit} more" if len(missing_images) > limit else ""
        problems.append(f"{len(missing_images)} label(s) without an image:\n" + "\n".join(lines) + more)
    if problems:
        raise DatasetError(f"{dataset}: " + "\n".join(problems))
    return [(images[k], labels[k]) for k in sorted(images)]


# --------------------------------------------------------------------------------------------
# Label values


def check_label_values(raw: np.ndarray, known: np.ndarray, path: Path | str, what: str = "label ids") -> None:
    """Raise naming ``path`` and the offending values if ``raw`` holds a value with ``known[value] == False``.

    ``known`` is a boolean table indexed by label value; values at or beyond its end are unknown.
    The common case (every value below the first unknown one) costs a single ``max``.
    """
    first_unknown = int(np.argmin(known)) if not known.all() else len(known)
    top = int(raw.max()) if raw.size else 0
    if top < first_unknown:
        return
    values = np.unique(raw[raw >= first_unknown])
    bad = [int(v) for v in values if v >= len(known) or not known[v]]
    if bad:
        valid = np.flatnonzero(known)
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        raise DatasetError(f"label {path} holds {what} outside the known ones: {shown} (known: {_ranges(valid)})")


def _ranges(values: Iterable[int]) -> str:
    """``0-33, 255`` style summary of sorted integers."""
    values = list(values)
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


# --------------------------------------------------------------------------------------------
# Base class of file datasets


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
            bilinear, label nearest), so a cache stores the resized frames. For protocols that
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
        sample = self.samples[index]
        image = read_image(sample.image)
        height, width = image.shape[:2]
        if sample.label is None:
            size = self.resize or (height, width)
            if self.resize is not None:
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            return image, np.full(size, self.ignore_index, dtype=self.mask_dtype())
        raw = self.read_raw_label(sample.label)
        if raw.shape[:2] != (height, width):
            raise DatasetError(
                f"image and label sizes differ: {sample.image} is {width}x{height} (WxH) but "
                f"{sample.label} is {raw.shape[1]}x{raw.shape[0]}"
            )
        self.check_raw_label(raw, sample.label)
        if self.resize is not None:
            h, w = self.resize
            if (h, w) != (height, width):
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
                raw = cv2.resize(raw, (w, h), interpolation=cv2.INTER_NEAREST)
        return image, self.decode_label(raw, sample.label)

    def check_raw_label(self, raw: np.ndarray, path: Path) -> None:
        """Raise if ``raw`` holds unknown values (called on the full-size label, before any resize)."""

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``index`` as ``load`` returns it, without decoding when possible."""
        if self.resize is not None:
            return self.resize
        size = png_size(self.samples[index].image)
        if size is None:
            size = read_image(self.samples[index].image).shape[:2]
        return size

    def cache_signature(self) -> dict[str, Any]:
        """Everything that determines the loaded frames: class, options and the files (with size and mtime)."""
        files = []
        for sample in self.samples:
            for path in (sample.image, sample.label):
                if path is None:
                    files.append(None)
                    continue
                stat = path.stat()
                files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "split": self.split,
            "resize": self.resize,
            "ignore_index": self.ignore_index,
            "options": self.options(),
            "files": files,
        }


def lookup_table(mapping: Mapping[int, int], size: int, fill: int, dtype: Any = np.int64) -> np.ndarray:
    """A table of ``size`` entries: ``table[raw] = mapping.get(raw, fill)``."""
    table = np.full(size, fill, dtype=dtype)
    for raw, target in mapping.items():
        table[raw] = target
    return table
