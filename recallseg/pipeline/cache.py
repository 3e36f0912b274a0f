"""A decoded-frame cache: every frame is decoded once, later epochs read uint8 from a memory map.

PNG decoding dominates the cost of a file dataset (a 2048x1024 Cityscapes frame takes tens of
milliseconds). ``CachedDataset`` wraps a dataset: the first time a frame is loaded it is
decoded as usual (resize included, when the dataset resizes) and written into two flat
memory-mapped files, one for images (uint8) and one for masks (in the dataset's ``mask_dtype()``,
the dtype masks travel in, uint8 for every built-in dataset); every later load
is a slice of the memory map. Transforms run after the cache, so random augmentation stays
random.

The files live in ``cache_dir/<Dataset>-<split>-<key>/``, where the key hashes everything that
determines the frames (class, options, and each file's path, size, modification and change
times and inode, see ``data.files.file_signature``): changing the data or the options makes a
new cache, never a stale read. Several processes (DataLoader
workers, one per GPU) share one cache: the files are created once, atomically, and each frame
slot is written before its "filled" flag. The files are sparse until filled; the disk space
needed is checked up front (too little is a ``ConfigError`` giving both sizes). A cache folder
that cannot be written (read-only, under a file) is an ``OSError`` from ``FrameCache.open``;
``build_dataset`` then warns and reads the dataset uncached, the cache being only a speed-up.

Enable it from config with ``dataset.cache=true`` (and ``dataset.cache_dir=...``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from recallseg.atomic_files import human_size
from recallseg.data.base import CompactFrames, SegmentationDataset
from recallseg.data.masks import to_mask_dtype
from recallseg.errors import ConfigError

DEFAULT_CACHE_DIR = ".cache/recallseg"
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$RECALLSEG_CACHE`` or ``.cache/recallseg``."""
    return Path(os.environ.get("RECALLSEG_CACHE", DEFAULT_CACHE_DIR))


def _signature(dataset: SegmentationDataset) -> dict[str, Any]:
    if hasattr(dataset, "cache_signature"):
        return dataset.cache_signature()
    simple = (int, float, str, bool, type(None), tuple, list)
    return {
        "class": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "length": len(dataset),
        "attributes": {k: v for k, v in sorted(vars(dataset).items()) if k != "transform" and isinstance(v, simple)},
    }


class FrameCache:
    """The memory-mapped storage of one dataset's decoded frames (see the module docstring)."""

    def __init__(self, directory: Path, shapes: np.ndarray, mask_dtype: np.dtype):
        self.directory = Path(directory)
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        self.mask_dtype = np.dtype(mask_dtype)
        pixels = self.shapes[:, 0] * self.shapes[:, 1]
        self.mask_offsets = np.concatenate([[0], np.cumsum(pixels)])
        self.image_offsets = self.mask_offsets * 3
        self._readers: tuple[np.memmap, np.memmap] | None = None
        self._writers: tuple[np.memmap, np.memmap] | None = None
        self._filled: np.memmap | None = None

    @property
    def nbytes(self) -> int:
        return int(self.image_offsets[-1] + self.mask_offsets[-1] * self.mask_dtype.itemsize + len(self.shapes))

    @classmethod
    def open(cls, dataset: SegmentationDataset, cache_dir: str | os.PathLike) -> "FrameCache":
        """Open (creating when needed) the cache of ``dataset`` under ``cache_dir``."""
        signature = {"version": FORMAT_VERSION, "dataset": _signature(dataset)}
        key = hashlib.sha256(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()[:16]
        split = getattr(dataset, "split", "data")
        directory = Path(cache_dir).expanduser() / f"{type(dataset).__name__}-{split}-{key}"
        meta_path = directory / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            cache = cls(directory, np.array(meta["shapes"]), np.dtype(meta["mask_dtype"]))
        else:
            shapes = np.array([frame_shape(dataset, i) for i in range(len(dataset))], dtype=np.int64).reshape(-1, 2)
            cache = cls(directory, shapes, dataset.mask_dtype())
            cache._create(signature)
        # Loads mark frames filled: a read-only cache fails here, at the start, not in a loader worker.
        with open(directory / "filled.bin", "r+b"):
            pass
        return cache

    def _create(self, signature: dict[str, Any]) -> None:
        parent = self.directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
        if self.nbytes > free:
            raise ConfigError(
                "dataset.cache_dir", f"the frame cache of {len(self.shapes)} frames needs {human_size(self.nbytes)} but {parent} has "
                f"{human_size(free)} free", "set dataset.cache_dir= to a larger disk, or dataset.cache=false",
            )  # fmt: skip
        staging = parent / f".{self.directory.name}.{uuid.uuid4().hex[:8]}.tmp"
        staging.mkdir()
        try:
            for name, size in (
                ("images.bin", int(self.image_offsets[-1])),
                ("masks.bin", int(self.mask_offsets[-1]) * self.mask_dtype.itemsize),
                ("filled.bin", len(self.shapes)),
            ):
                with open(staging / name, "wb") as f:
                    f.truncate(max(size, 1))  # sparse: no disk used until written
            meta = {"shapes": self.shapes.tolist(), "mask_dtype": self.mask_dtype.str, "signature": signature}
            (staging / "meta.json").write_text(json.dumps(meta, default=str))
        except OSError:  # a half-made cache is never left for the next run to find
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.rename(staging, self.directory)
        except OSError:  # another process created it first: use theirs
            shutil.rmtree(staging, ignore_errors=True)
            if not (self.directory / "meta.json").is_file():
                raise

    def _maps(self, mode: str) -> tuple[np.memmap, np.memmap]:
        images = np.memmap(self.directory / "images.bin", dtype=np.uint8, mode=mode)
        masks = np.memmap(self.directory / "masks.bin", dtype=self.mask_dtype, mode=mode)
        return images, masks

    @property
    def filled(self) -> np.memmap:
        if self._filled is None:
            self._filled = np.memmap(self.directory / "filled.bin", dtype=np.uint8, mode="r+")
        return self._filled

    def is_filled(self, index: int) -> bool:
        return bool(self.filled[index])

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read-only views of frame ``index`` (image uint8 HxWx3, mask in the cache's dtype)."""
        if self._readers is None:
            self._readers = self._maps("r")
        images, masks = self._readers
        height, width = self.shapes[index]
        image = images[self.image_offsets[index] : self.image_offsets[index + 1]].reshape(height, width, 3)
        mask = masks[self.mask_offsets[index] : self.mask_offsets[index + 1]].reshape(height, width)
        return image, mask

    def write(self, index: int, image: np.ndarray, mask: np.ndarray, name: str = "") -> None:
        expected = tuple(int(v) for v in self.shapes[index])
        if image.shape != (*expected, 3) or mask.shape != expected:
            raise ValueError(
                f"frame {name or index} is {image.shape[1]}x{image.shape[0]} but the cache expected {expected[1]}x{expected[0]} "
                f"(the header or the dataset's resize said so); delete {self.directory} if the files changed in place"
            )
        if self._writers is None:
            self._writers = self._maps("r+")
        images, masks = self._writers
        images[self.image_offsets[index] : self.image_offsets[index + 1]] = image.reshape(-1)
        masks[self.mask_offsets[index] : self.mask_offsets[index + 1]] = mask.reshape(-1)
        self.filled[index] = 1  # after the data: a reader never sees a half-written frame as filled

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each process (pickling one would copy the whole file).
        return {**self.__dict__, "_readers": None, "_writers": None, "_filled": None}


def frame_shape(dataset: SegmentationDataset, index: int) -> tuple[int, int]:
    """``(height, width)`` of frame ``index`` as the dataset loads it: from the file header where the dataset can tell."""
    if hasattr(dataset, "frame_shape"):
        return tuple(dataset.frame_shape(index))
    return dataset.load(index)[0].shape[:2]


class CachedDataset(CompactFrames, SegmentationDataset):
    """``source`` with its decoded frames cached in ``cache_dir`` (see the module docstring).

    Exposes the source's ``classes``, ``palette`` and ``ignore_index``; other attributes are
    looked up on the source. ``transform`` applies after the cache, on the cached frame in
    place (a view of the memory map: no copy of the full frame on the hot path).
    """

    def __init__(self, source: SegmentationDataset, cache_dir: str | os.PathLike | None = None, transform=None):
        super().__init__(transform)
        if source.transform is not None:
            raise ValueError("CachedDataset caches untransformed frames: build the source dataset with transform=None")
        self.source = source
        self.classes, self.palette, self.ignore_index = source.classes, source.palette, source.ignore_index
        self.cache = FrameCache.open(source, cache_dir if cache_dir is not None else default_cache_dir())

    def __getattr__(self, name: str) -> Any:
        if name == "source" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.source, name)

    def __len__(self) -> int:
        return len(self.source)

    def describe(self, index: int) -> str:
        return self.source.describe(index)

    def load_compact(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read-only views of the cached frame, or the freshly decoded frame (then cached)."""
        if self.cache.is_filled(index):
            return self.cache.read(index)
        if hasattr(self.source, "load_compact"):
            image, mask = self.source.load_compact(index)
        else:
            image, mask = self.source.load(index)
        mask = to_mask_dtype(mask, self.num_classes, self.ignore_index, self.source.describe(index), self.source.mask_dtype())
        self.cache.write(index, image, mask, self.source.describe(index))
        return image, mask

    def fill(self, progress: bool = True) -> None:
        """Decode every frame not cached yet (in this process)."""
        missing = [i for i in range(len(self)) if not self.cache.is_filled(i)]
        if progress and missing:
            from tqdm import tqdm

            missing = tqdm(missing, desc=f"caching {type(self.source).__name__}", unit="frame")
        for index in missing:
            self.load_compact(index)
