"""How Synthia frames are split into train/val/test.

Neither SYNTHIA-SEQS nor SYNTHIA-RAND-CITYSCAPES comes with a train/val/test split. Like the
paper's code, recallseg draws a random 70/10/20 split from a seed; the files are sorted by
relative path first, so the split depends on the seed and the set of files only, never on the
order the file system lists them in. Note that frames of one time step seen by different
cameras land in different splits (as in the paper): the Synthia test score measures
interpolation within the sequence.

Two procedures (``split_procedure``):

- ``recallseg`` (default): one numpy permutation (``default_rng(seed)``) of all sorted pairs,
  cut-offs rounded (``round(0.7 n)``, ``round(0.1 n)``), the rest test;
- ``authors``: the paper code's procedure, per sequence and stereo side/camera directory:
  python's ``random.seed(seed)``, ``random.shuffle`` of that directory's files, cut-offs
  truncated (``int(0.7 n)``, ``int(0.1 n)``), the rest test. Their code shuffles the list that
  ``glob`` returns, whose order is whatever the file system lists (not reproducible across
  machines); recallseg shuffles the names sorted, which is their split on a file system that
  lists names in order.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test", "all")
SPLIT_PROCEDURES = ("recallseg", "authors")


def _check(split: str, fractions: Sequence[float]) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1 (train, val, test), got {list(fractions)}")


def _bounds(split: str, n_train: int, n_val: int, total: int) -> tuple[int, int]:
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, total)}[split]


def split_indices(num_items: int, split: str, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Indices of ``split`` in a seeded random train/val/test partition of ``num_items`` sorted items."""
    _check(split, fractions)
    if split == "all":
        return np.arange(num_items)
    order = np.random.default_rng(seed).permutation(num_items)
    n_train = int(round(fractions[0] * num_items))
    n_val = int(round(fractions[1] * num_items))
    start, stop = _bounds(split, n_train, n_val, num_items)
    return np.sort(order[start:stop])


def authors_split(names: Sequence[str], split: str, seed: int, fractions: Sequence[float]) -> list[str]:
    """The paper code's split of one directory's file ``names``: ``random.seed(seed)``, shuffle, ``int()`` cut-offs.

    ``names`` are sorted first (see the module docstring). The global ``random`` state is left as it was.
    """
    _check(split, fractions)
    names = sorted(names)
    if split == "all":
        return names
    state = random.getstate()
    try:
        random.seed(seed)
        random.shuffle(names)
    finally:
        random.setstate(state)
    n_train, n_val = int(fractions[0] * len(names)), int(fractions[1] * len(names))
    start, stop = _bounds(split, n_train, n_val, len(names))
    return names[start:stop]


def split_positions(keys: Sequence[str], split: str, seed: int, fractions: Sequence[float], procedure: str = "recallseg") -> list[int]:
    """Positions in ``keys`` (relative paths ``DIRECTORY/NAME``) of the frames of ``split``, in split order."""
    if procedure == "authors":
        _check(split, fractions)
        directories: dict[str, dict[str, int]] = {}
        for position, key in enumerate(keys):
            directory, name = key.rsplit("/", 1)
            directories.setdefault(directory, {})[name] = position
        return [files[name] for files in directories.values() for name in authors_split(list(files), split, seed, fractions)]
    order = sorted(range(len(keys)), key=keys.__getitem__)  # by relative path: independent of listing order
    return [order[i] for i in split_indices(len(order), split, seed, fractions)]
