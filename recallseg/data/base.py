"""The contract every recallseg dataset follows.

A dataset yields ``(image, mask)``: ``image`` an HxWx3 uint8 RGB array, ``mask`` an HxW
array of train ids with ``ignore_index`` for pixels that take no part, in the dataset's
``mask_dtype()``: the smallest integer type holding both (uint8 when they lie in 0..255; see
``masks.py``). Masks cross the loader in it and become int64 only on the device. With a
transform, both go through it (an albumentations-style callable taking ``image=`` and
``mask=`` keywords). The training loader asks for ``ds[(index, seed)]``: the seed makes the
random augmentation of that sample a pure function of its position in the sample stream,
so results do not depend on the number of workers and a resumed run sees the same data.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from recallseg.data.masks import compact_mask_dtype, to_mask_dtype


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
        compact dtype (``io.CompactFrames``), so augmentation moves fewer bytes."""
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
