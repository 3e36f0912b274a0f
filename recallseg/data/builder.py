"""Build datasets and their transforms from the ``dataset`` config group.

A dataset config names its class with ``_target_``; every other key is a constructor
argument, except the reserved keys below, which the builder consumes:

- ``train_transform`` / ``val_transform``: transform specs (see ``transforms.py``);
- ``split``: the split that evaluation scores (``val`` by default, ``test`` possible);
- ``train_split`` / ``val_split``: the splits that training uses and validates on (``train``, ``val``);
- ``stats_file``: a class statistics JSON (``scripts/class_stats.py``) to use instead of computing counts.
"""

from __future__ import annotations

from typing import Any, Mapping

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from .base import SegmentationDataset
from .transforms import build_transform

RESERVED_KEYS = ("_target_", "train_transform", "val_transform", "split", "train_split", "val_split", "stats_file")


def dataset_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the dataset described by ``cfg``."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {key: value for key, value in cfg.items() if key not in RESERVED_KEYS}


def build_dataset(cfg: Mapping[str, Any], split: str, train: bool | None = None, transform: Any = "auto") -> SegmentationDataset:
    """Instantiate the dataset of ``cfg`` for ``split``.

    ``train`` picks the transform pipeline (train or val); by default it is ``split == train_split``.
    Pass ``transform=None`` for raw samples (statistics, checks).
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if "_target_" not in cfg:
        raise ValueError(f"dataset config has no _target_ naming the dataset class: {cfg}")
    if train is None:
        train = split == cfg.get("train_split", "train")
    if transform == "auto":
        transform = build_transform(cfg.get("train_transform" if train else "val_transform"))
    cls = get_class(cfg["_target_"])
    return cls(split=split, transform=transform, **dataset_options(cfg))
