"""The integer dtype masks travel in, from the dataset to the device.

A batch of masks crosses worker processes, shared memory, pinned memory and the
host-to-device copy; as int64 it is 8x the bytes of uint8. So each dataset's masks use the
smallest dtype that holds every value the dataset can produce (train ids ``0..C-1`` and its
``ignore_index``): uint8 for every built-in dataset, int16 or int32 for an ignore index of
-1 or more than 255 classes. They become int64, the class indices losses take, only on the
device, right after the copy (``runtime.device.to_target``).
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np

# Signed beyond uint8: torch handles int16/int32 everywhere, uint16/uint32 only in part.
MASK_DTYPES = (np.uint8, np.int16, np.int32)


def compact_dtype(values: Iterable[int]) -> np.dtype:
    """The first of ``MASK_DTYPES`` that holds every value (int64 if none does)."""
    values = [int(v) for v in values]
    lo, hi = min(values), max(values)
    for dtype in MASK_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


@functools.lru_cache(maxsize=None)
def compact_mask_dtype(num_classes: int, ignore_index: int) -> np.dtype:
    """The dtype of the masks of a dataset with ``num_classes`` train ids and ``ignore_index``."""
    return compact_dtype([0, max(int(num_classes) - 1, 0), int(ignore_index)])


def to_mask_dtype(mask: np.ndarray, num_classes: int, ignore_index: int, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """``mask`` as a contiguous array of ``dtype``: the dataset's ``mask_dtype()``, by default
    ``compact_mask_dtype(num_classes, ignore_index)``.

    A narrowing cast would silently wrap values that do not fit (300 -> 44 in uint8), so a
    mask in a wider dtype is range-checked first; the error names ``name`` (the sample) and
    the values. Masks already in a dtype that casts safely cost nothing extra.
    """
    dtype = np.dtype(dtype) if dtype is not None else compact_mask_dtype(num_classes, ignore_index)
    mask = np.asarray(mask)
    if mask.size and not np.can_cast(mask.dtype, dtype, casting="safe"):
        info = np.iinfo(dtype)
        if mask.min() < info.min or mask.max() > info.max:
            bad = np.unique(mask[(mask < info.min) | (mask > info.max)])
            shown = ", ".join(str(v) for v in bad[:20].tolist()) + (" ..." if len(bad) > 20 else "")
            raise ValueError(
                f"{name}: mask values {shown} are neither train ids (0..{num_classes - 1}) nor the ignore index ({ignore_index})"
            )
    return np.ascontiguousarray(mask, dtype=dtype)
