"""Per-class pixel counts over a dataset's training split, written as JSON.

    recallseg-class-stats dataset=cityscapes output=cityscapes_stats.json num_workers=8
    python train.py dataset=cityscapes loss=weighted_ce dataset.stats_file=cityscapes_stats.json

Reads the same dataset configs as train.py (configs/dataset/), without augmentation, with a
progress bar and DataLoader workers. The JSON holds ``dataset``, ``split``, ``config`` (the
dataset options it was computed for; a run with other ones refuses the file), ``classes``,
``pixel_counts``, ``image_pixels`` (per class, the labelled pixels of the images containing it:
weighted_ce's median_frequency) and ``frequencies`` (fractions of the non-ignored pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from recallseg.atomic_files import check_output_location
from recallseg.config.compose import CONFIG_PATH, compose_checked, runs_a_job
from recallseg.commands.user_errors import user_errors
from recallseg.pipeline.builder import build_dataset, dataset_locations
from recallseg.pipeline.class_statistics import class_statistics, write_statistics


def class_stats(cfg: DictConfig) -> dict[str, Any]:
    """Count the pixels of each class in ``cfg.split`` (default: the training split); write ``cfg.output``."""
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    split = cfg.split or dataset_cfg.get("train_split", "train")
    check_output_location("output", cfg.output, reads=dataset_locations(dataset_cfg), file=True)
    dataset = build_dataset(dataset_cfg, split, transform=None)  # the labels themselves: no augmentation
    stats = class_statistics(dataset, dataset.num_classes, dataset.ignore_index, num_workers=int(cfg.num_workers))
    counts = stats.pixel_counts
    write_statistics(cfg.output, dataset, stats, split, dataset_cfg)  # records the label-relevant config and image_pixels
    total = int(counts.sum())
    print(f"{type(dataset).__name__} {split}: {len(dataset)} images, {total} labelled pixels -> {Path(cfg.output).resolve()}")
    for name, count in zip(dataset.classes, counts.tolist(), strict=True):
        print(f"  {name:>20s} {count:>14d} {count / total if total else 0.0:8.4f}")
    return {"classes": list(dataset.classes), "pixel_counts": counts.tolist(), "split": split}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="class_stats")
def _app(cfg: DictConfig) -> None:
    with user_errors():
        class_stats(cfg)


def main() -> None:
    """``recallseg-class-stats`` and ``python scripts/class_stats.py``: mistakes in the arguments are
    one line and exit 2 before Hydra opens a run directory."""
    if runs_a_job(sys.argv[1:]):
        with user_errors():
            compose_checked("class_stats", sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
