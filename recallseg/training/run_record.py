"""The record a training run keeps of itself, so that a number in ``metrics.json`` can be traced
to the code, versions, machine and data that produced it.

``training_record`` is collected once, before the first step, on rank 0: it goes into
``train.log`` (``evaluation.run_record.log_record``), into every checkpoint (``run``) and,
with what ``RunClock`` measured added at the end (``end``), into ``metrics.json``. A resumed run records itself and
keeps the records of the runs before it (``earlier_runs``), since each may have run elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from recallseg.data.base import SegmentationDataset
from recallseg.evaluation.run_record import new_record
from recallseg.pipeline.data_record import data_record
from recallseg.runtime.device import Runtime
from recallseg.runtime.environment import peak_memory

log = logging.getLogger("recallseg")

# Keys that say where a run writes or what it continues from, not how it trains: runs with the
# same settings share a config hash wherever they write.
PLACE_KEYS = ("output_dir", "resume")


def training_record(cfg: DictConfig, runtime: Runtime, train_set: SegmentationDataset, val_set: SegmentationDataset, resumed: dict | None) -> dict[str, Any]:
    """The record of this run (plain data only: it is stored in checkpoints)."""

    def config() -> dict[str, Any]:
        return {key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items() if key not in PLACE_KEYS}

    def data() -> dict[str, Any]:
        dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
        return data_record(dataset_cfg, {dataset_cfg["train_split"]: train_set, dataset_cfg["val_split"]: val_set})

    record = new_record("train", runtime, config, data)
    earlier = (resumed or {}).get("run")
    if isinstance(earlier, dict):
        record["resumed_at"] = int(resumed.get("iteration", 0))
        before = earlier.get("earlier_runs")
        record["earlier_runs"] = [*(before if isinstance(before, list) else []), {k: v for k, v in earlier.items() if k != "earlier_runs"}]
    return record


class RunClock:
    """The wall time of a run and the part of it spent training: validations and checkpoints are
    timed apart (outside the step), so that iterations per second describe the steps."""

    def __init__(self, iteration: int = 0):
        self.start, self.first_iteration, self.elsewhere = time.perf_counter(), iteration, 0.0

    @contextlib.contextmanager
    def not_training(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.elsewhere += time.perf_counter() - began

    def end(self, iteration: int, images_per_iteration: int, runtime: Runtime) -> dict[str, Any]:
        """Time, speed and peak memory of this process, for the record's ``end``."""
        wall = time.perf_counter() - self.start
        iterations = iteration - self.first_iteration
        training = max(wall - self.elsewhere, 1e-9)
        return {
            "wall_seconds": round(wall, 3),
            "training_seconds": round(training, 3),
            "iterations": iterations,
            "iterations_per_second": round(iterations / training, 4),
            "images_per_second": round(iterations * images_per_iteration / training, 3),
            **peak_memory(runtime.device.type, runtime.device),
        }


def log_end(end: dict[str, Any]) -> None:
    memory = f"peak memory {end.get('cpu_peak_rss_mib')} MiB resident"
    if "cuda_max_allocated_mib" in end:
        memory += f", {end['cuda_max_allocated_mib']} MiB CUDA allocated"
    log.info(
        "run took %.1f s (%.1f s training): %d iterations, %.3f it/s, %.2f img/s; %s",
        end["wall_seconds"], end["training_seconds"], end["iterations"], end["iterations_per_second"], end["images_per_second"], memory,
    )  # fmt: skip
