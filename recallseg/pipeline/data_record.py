"""The data part of a run's record: which dataset, where, how many images per split, and a
fingerprint of each split's labels.

The fingerprint is the key the split's class statistics are cached under
(``class_statistics.statistics_key``): the dataset options that determine the labels, the split,
and every label file's path, size and modification time. It changes when a label file is
replaced or edited and stays while nothing changes, without reading the files (a few thousand
``stat`` calls); a copy of the same files elsewhere has another fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from recallseg.data.base import SegmentationDataset
from recallseg.pipeline.class_statistics import label_files_signature, statistics_config, statistics_key
from recallseg.runtime.environment import UNKNOWN, readable


def label_fingerprint(dataset: SegmentationDataset, dataset_cfg: Mapping[str, Any], split: str) -> str:
    """The fingerprint of ``split``'s labels (also the name of its class statistics' cache file)."""
    return statistics_key(statistics_config(dataset_cfg), split, label_files_signature(dataset))


def dataset_class(dataset: SegmentationDataset) -> str:
    source = getattr(dataset, "source", dataset)  # a CachedDataset wraps the file dataset
    return f"{type(source).__module__}.{type(source).__qualname__}"


def data_record(dataset_cfg: Mapping[str, Any], splits: Mapping[str, SegmentationDataset]) -> dict[str, Any]:
    """``{"dataset", "root", "splits": {name: {"images", "label_fingerprint"}}}`` of the datasets of ``splits``."""
    first = next(iter(splits.values()))
    root = dataset_cfg.get("root")
    return {
        "dataset": readable(lambda: dataset_class(first)),
        "root": readable(lambda: str(Path(str(root)).expanduser().resolve())) if root is not None else None,
        "splits": {
            name: {"images": readable(lambda: len(dataset)), "label_fingerprint": readable(lambda: label_fingerprint(dataset, dataset_cfg, name))}
            for name, dataset in splits.items()
        },
    }


def describe_data(record: Any) -> str:
    """One line: the dataset, its root and each split's images and label fingerprint."""
    data = record.get("data") if isinstance(record, Mapping) else None
    if not isinstance(data, Mapping):
        return f"data: {UNKNOWN}"
    splits = data.get("splits") if isinstance(data.get("splits"), Mapping) else {}
    shown = ", ".join(
        f"{name} {split.get('images', UNKNOWN)} images (labels {split.get('label_fingerprint', UNKNOWN)})"
        for name, split in splits.items() if isinstance(split, Mapping)
    )  # fmt: skip
    root = data.get("root")
    return f"data: {data.get('dataset', UNKNOWN)}" + (f" at {root}" if root else "") + (f"; {shown}" if shown else "")
