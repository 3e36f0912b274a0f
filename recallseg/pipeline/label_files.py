"""Which label files a split's class statistics describe: recorded with them, checked when they are read.

A statistics file records two digests of the split's label files:

- ``identity``, over each file's resolved path, size, modification and change times and inode
  (``data.files.file_signature``). Any rewrite moves it, also one whose size and modification
  time are put back (``cp -p``, ``rsync -a``, an archive), and so does any copy.
- ``content``, over each file's path relative to the dataset root and its bytes. It survives a
  copy to another disk or machine and moves with the labels.

Reading a statistics file costs one ``stat`` per label file while the identity matches; only
when it does not are the label files read, to tell a copy from other labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

from recallseg.data.base import SegmentationDataset
from recallseg.data.files import file_signature
from recallseg.errors import ConfigError

log = logging.getLogger(__name__)


def label_paths(dataset: SegmentationDataset) -> list[Path] | None:
    """The label file of every labelled sample of a file dataset, in sample order (None for other datasets)."""
    source = getattr(dataset, "source", dataset)  # a CachedDataset wraps the file dataset
    samples = getattr(source, "samples", None)
    if samples is None:
        return None
    return [Path(sample.label) for sample in samples if getattr(sample, "label", None) is not None]


def label_files_signature(dataset: SegmentationDataset) -> list | None:
    """``file_signature`` of every label file of a file dataset (None for others): a cache key part."""
    source = getattr(dataset, "source", dataset)
    samples = getattr(source, "samples", None)
    if samples is None:
        return None
    return [None if getattr(sample, "label", None) is None else file_signature(sample.label) for sample in samples]


def _identity(paths: list[Path]) -> str:
    return hashlib.sha256(json.dumps([file_signature(path) for path in paths]).encode()).hexdigest()


def _content(paths: list[Path], root: Path | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        name = path.name
        if root is not None:
            try:
                name = path.relative_to(root).as_posix()
            except ValueError:
                pass
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def label_files_record(dataset: SegmentationDataset) -> dict[str, Any] | None:
    """``{count, identity, content}`` of the dataset's label files (see the module docstring); None without files."""
    paths = label_paths(dataset)
    if paths is None:
        return None
    root = getattr(getattr(dataset, "source", dataset), "root", None)
    return {"count": len(paths), "identity": _identity(paths), "content": _content(paths, root)}


def check_label_files(stored: Mapping[str, Any] | None, dataset: SegmentationDataset, path: Path) -> None:
    """Refuse a statistics file computed from other label files than ``dataset``'s (``stored``: its record)."""
    paths = label_paths(dataset)
    if paths is None:
        return
    if not isinstance(stored, Mapping) or not {"count", "identity", "content"} <= set(stored):
        log.warning("dataset.stats_file %s records no label files: cannot check it describes this split's labels", path)
        return
    if stored["count"] == len(paths) and stored["identity"] == _identity(paths):
        return
    root = getattr(getattr(dataset, "source", dataset), "root", None)
    if stored["count"] == len(paths) and stored["content"] == _content(paths, root):
        log.info("dataset.stats_file %s: the label files were copied or touched since; their content is the one it describes", path)
        return
    then = f"{stored['count']} label files then, {len(paths)} now" if stored["count"] != len(paths) else f"the content of its {len(paths)} label files differs"
    raise ConfigError(
        "dataset.stats_file", f"{path} was computed from other label files than this split's ({then})",
        "rewrite it with recallseg-class-stats, or set dataset.stats_file=null to compute the statistics",
    )
