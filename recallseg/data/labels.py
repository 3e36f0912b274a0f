"""Label values: which ones a dataset accepts, and the tables that turn raw ids into train ids.

A label value the dataset does not know is an error naming the file and the values, raised
before anything reaches the model; raw ids become train ids through one lookup table, never id
by id in place (whose result would depend on the order of the ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from recallseg.errors import DatasetError


def checked_ignore_index(dataset: str, ignore_index: int, num_classes: int) -> int:
    """``ignore_index`` as an int; a value that is also a class id would silently drop that class."""
    ignore_index = int(ignore_index)
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"{dataset} ignore_index {ignore_index} collides with a class id (0..{num_classes - 1})")
    return ignore_index


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


def lookup_table(mapping: Mapping[int, int], size: int, fill: int, dtype: Any) -> np.ndarray:
    """A table of ``size`` entries: ``table[raw] = mapping.get(raw, fill)``."""
    table = np.full(size, fill, dtype=dtype)
    for raw, target in mapping.items():
        table[raw] = target
    return table
