"""The record every run keeps of itself (training, evaluation, prediction), how a log shows it,
and what an evaluation says when its checkpoint was trained with other versions or data.

A record is plain data: ``kind``, ``started``, the environment (``runtime.environment``: code,
versions, machine, command), ``config_hash``, ``data`` (``pipeline.data_record``) and, at the
end, ``end`` (time, speed, peak memory). Collecting it never fails a run.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from recallseg.data.base import SegmentationDataset
from recallseg.pipeline.data_record import data_record, describe_data
from recallseg.runtime.device import Runtime
from recallseg.runtime.environment import UNKNOWN, config_hash, describe_environment, environment, peak_memory, readable, version_differences

log = logging.getLogger("recallseg")


def new_record(kind: str, runtime: Runtime, config: Callable[[], Mapping[str, Any]] | None = None, data: Callable[[], Any] | None = None) -> dict[str, Any]:
    """A run's record at its start: the hash of what ``config()`` gives and the ``data_record`` that
    ``data()`` gives, each ``"unknown"`` when it cannot be read."""
    record: dict[str, Any] = {"kind": kind, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **environment(runtime)}
    if config is not None:
        record["config_hash"] = readable(lambda: config_hash(config()))
    if data is not None:
        record["data"] = readable(data)
    return record


def record_lines(record: Mapping[str, Any]) -> list[str]:
    """The short block a log shows of a record."""
    lines = describe_environment(record)
    if "data" in record:
        lines.append(describe_data(record))
    config = f"; config hash {record['config_hash']}" if "config_hash" in record else ""
    lines.append(f"command: {record.get('command', UNKNOWN)} (in {record.get('working_directory', UNKNOWN)}){config}")
    return lines


def log_record(record: Mapping[str, Any]) -> None:
    for line in record_lines(record):
        log.info("%s", line)


def evaluation_record(
    checkpoint: Path, runtime: Runtime, config: Mapping[str, Any], dataset_cfg: Mapping[str, Any], split: str, dataset: SegmentationDataset
) -> dict[str, Any]:
    """The record of an evaluation of ``checkpoint`` on ``split`` of ``dataset``; ``config`` is what it ran with."""
    record = new_record("evaluate", runtime, lambda: config, lambda: data_record(dataset_cfg, {split: dataset}))
    return {**record, "checkpoint": str(checkpoint)}


def with_end(record: dict[str, Any], started: float, images: int, runtime: Runtime) -> dict[str, Any]:
    """``record`` with the time, speed and peak memory of a run that began at ``started`` (``time.perf_counter``)."""
    wall = max(time.perf_counter() - started, 1e-9)
    end = {"wall_seconds": round(wall, 3), "images": images, "images_per_second": round(images / wall, 3), **peak_memory(runtime.device.type, runtime.device)}
    return {**record, "end": end}


def _fingerprint(record: Any, split: str) -> Any:
    data = record.get("data") if isinstance(record, Mapping) else None
    splits = data.get("splits") if isinstance(data, Mapping) else None
    found = splits.get(split) if isinstance(splits, Mapping) else None
    return found.get("label_fingerprint") if isinstance(found, Mapping) else None


def differences_from_training(training_run: Any, record: Mapping[str, Any], split: str) -> str | None:
    """One line naming the versions and the ``split`` labels that differ from the checkpoint's training
    run, or None when nothing known differs (or the checkpoint records no run)."""
    if not isinstance(training_run, Mapping):
        return None
    differences = version_differences(training_run, record)
    trained, scored = _fingerprint(training_run, split), _fingerprint(record, split)
    if trained not in (None, UNKNOWN) and scored not in (None, UNKNOWN) and trained != scored:
        differences.append(f"{split} label fingerprint {trained} -> {scored}")
    if not differences:
        return None
    return (
        f"this evaluation differs from the checkpoint's training run ({'; '.join(differences)}): "
        "its scores may differ from the ones training reported"
    )
