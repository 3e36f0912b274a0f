"""Build datasets and their transforms from the ``dataset`` config group.

A dataset config names its class with ``_target_``; every other key is a constructor
argument, except the reserved keys below, which the builder consumes:

- ``train_transform`` / ``val_transform``: transform specs (see ``transforms.py``);
- ``crop``: ``[height, width]`` of the training crop, for the train transforms given no size;
  null (or absent): the training images' own size (``training_crop``);
- ``split``: the split that evaluation scores (``val`` by default, ``test`` possible);
- ``train_split`` / ``val_split``: the splits that training uses and validates on (``train``, ``val``);
- ``stats_file``: class statistics JSON (``recallseg-class-stats``) used instead of computing counts;
- ``cache``: true to keep decoded frames in a memory-mapped cache (see ``cache.py``; a cache
  folder that cannot be written is a warning, and the frames are decoded every time);
- ``cache_dir``: where the cache lives (``$RECALLSEG_CACHE`` or ``.cache/recallseg``);
- ``size_divisor``: the model's output stride (e.g. 32): fixed crop/resize sizes must be
  multiples of it, and a pipeline with a frame-dependent output size is padded to one
  (image with 0, mask with the dataset's ignore index).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from recallseg.config.construct import build
from recallseg.config.schema import DATASET_RESERVED
from recallseg.errors import ConfigError
from recallseg.data.base import SegmentationDataset
from recallseg.data.layout import require_samples
from recallseg.pipeline.cache import CachedDataset, default_cache_dir, frame_shape
from recallseg.pipeline.transforms import build_transform, check_output_size, output_size, with_crop

# The class and the keys the builder consumes; the rest are constructor arguments.
RESERVED_KEYS = ("_target_", *DATASET_RESERVED)
log = logging.getLogger("recallseg")


def dataset_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the dataset described by ``cfg``."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {key: value for key, value in cfg.items() if key not in RESERVED_KEYS}


def dataset_locations(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, path)`` of the folders the dataset of ``cfg`` reads: ``dataset.root`` and its
    ``*_dir`` options (relative ones under the root), for refusing outputs written over them."""
    options = dataset_options(cfg)
    root = options.get("root")
    found = [("dataset.root", str(root))] if root else []
    for key, value in options.items():
        if key.endswith("_dir") and isinstance(value, str) and value:
            found.append((f"dataset.{key}", str(Path(str(root or "")) / value)))
    return found


def build_dataset(
    cfg: Mapping[str, Any], split: str, train: bool | None = None, transform: Any = "auto", *, trusted: bool = True,
    named_by_user: frozenset[str] = frozenset(),
) -> SegmentationDataset:
    """Instantiate the dataset of ``cfg`` for ``split``.

    ``train`` picks the transform pipeline (train or val); by default it is ``split == train_split``.
    Pass ``transform=None`` for raw samples (statistics, checks). With ``cache: true`` the
    dataset is wrapped in a ``CachedDataset`` and the transform runs after the cache.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if train is None:
        train = split == cfg.get("train_split", "train")
    options = dataset_options(cfg)
    size_divisor = cfg.get("size_divisor")
    resize = options.get("resize")
    if size_divisor and resize is not None and any(int(v) % int(size_divisor) for v in resize):
        raise ConfigError(
            "dataset.resize", f"{list(resize)} is not divisible by {size_divisor} (dataset.size_divisor, the model's output stride)",
            f"use multiples of {size_divisor}, e.g. [{_round_to(resize[0], size_divisor)}, {_round_to(resize[1], size_divisor)}]",
        )
    section = {"_target_": cfg["_target_"], **options}
    dataset = build(section, "dataset", kind=SegmentationDataset, trusted=trusted, named_by_user=named_by_user, split=split, transform=None)
    if hasattr(dataset, "__len__"):  # a class the user names for a run is held to the contract where it is used
        require_samples(type(dataset).__name__, split, len(dataset), getattr(dataset, "root", None))
    if cfg.get("cache", False):
        try:
            dataset = CachedDataset(dataset, cfg.get("cache_dir"))
        except OSError as error:  # only a speed-up: the run goes on decoding every frame
            log.warning(
                "the frame cache cannot be written in dataset.cache_dir=%s (%s): frames are decoded every time; "
                "choose a writable dataset.cache_dir to cache them", cfg.get("cache_dir") or default_cache_dir(), _reason(error),
            )
    if transform == "auto":
        key = "train_transform" if train else "val_transform"
        specs = cfg.get(key)
        if train and trusted:  # a stored (untrusted) section is built as written
            specs = with_crop(specs, lambda: training_crop(cfg, dataset))
        transform = build_transform(
            specs, size_divisor=size_divisor, ignore_index=dataset.ignore_index, where=f"dataset.{key}", trusted=trusted,
            named_by_user=named_by_user,
        )
    dataset.transform = transform
    return dataset


def training_crop(cfg: Mapping[str, Any], dataset: SegmentationDataset) -> tuple[int, int]:
    """``dataset.crop`` as ``(height, width)``; null: the first training frame's size (its header, or
    ``dataset.resize``) rounded down to multiples of ``dataset.size_divisor``, so that a crop at scale 1
    is all image and no padding."""
    divisor = int(cfg.get("size_divisor") or 1)
    crop = cfg.get("crop")
    if crop is not None:
        if divisor > 1 and any(int(v) % divisor for v in crop):
            raise ConfigError(
                "dataset.crop", f"{list(crop)} is not divisible by {divisor} (dataset.size_divisor, the model's output stride)",
                f"use multiples of {divisor}, e.g. [{_round_to(crop[0], divisor)}, {_round_to(crop[1], divisor)}]",
            )
        return int(crop[0]), int(crop[1])
    height, width = frame_shape(dataset, 0)
    crop = (max(height // divisor, 1) * divisor, max(width // divisor, 1) * divisor)
    log.info(
        "training crop %dx%d (HxW): the size of %s (%dx%d), rounded down to multiples of %d; set dataset.crop=[H,W] to choose another",
        *crop, dataset.describe(0), height, width, divisor,
    )  # fmt: skip
    return crop


def _reason(error: OSError) -> str:
    return f"{error.strerror}: {error.filename}" if error.strerror and error.filename else " ".join(str(error).split())


def _round_to(value: int, divisor: int) -> int:
    return max(int(round(int(value) / int(divisor))), 1) * int(divisor)


def check_frame_sizes(cfg: Mapping[str, Any], dataset: SegmentationDataset, divisor: int | None) -> None:
    """Refuse, before the first step, training frames whose sides the network cannot take (``divisor``:
    ``models.builder.input_divisor``); the dataset carries its training transform."""
    if divisor is None:
        return
    size_divisor = cfg.get("size_divisor")
    if size_divisor:
        if int(size_divisor) % divisor:
            raise ConfigError(
                "dataset.size_divisor", f"{size_divisor} pads frames to multiples of {size_divisor}, but the model needs sides divisible by {divisor} (its output stride)",
                f"set dataset.size_divisor={divisor} (or a multiple of it)",
            )
        return
    transforms = list(getattr(dataset.transform, "transforms", []))
    if check_output_size(transforms, divisor, "dataset.train_transform") != "variable":
        return  # a fixed size, checked just now, or padded to a multiple
    size = output_size(dataset.transform, tuple(frame_shape(dataset, 0)))
    if size is None or size[0] % divisor or size[1] % divisor:
        made = "frames of varying sizes" if size is None else f"{size[0]}x{size[1]} (HxW) frames ({dataset.describe(0)})"
        raise ConfigError(
            "dataset.size_divisor", f"is null and training gets {made}, but the model needs sides divisible by {divisor} (its output stride)",
            f"set dataset.size_divisor={divisor} to pad them, or resize or crop them to multiples of {divisor}",
        )

