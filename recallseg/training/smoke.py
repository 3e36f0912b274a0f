"""``trainer.smoke=true``: check that a setup works end to end in under a minute.

A smoke run keeps the user's config (dataset, model, loss, device) and shrinks what takes time:
a few iterations on batches of two, one validation at the end, then the checkpoints are saved.
Datasets shrink where they can: the synthetic one through its own options (fewer, smaller
frames); file datasets take their first few samples and a smaller training crop. What changed
is logged. A smoke run starts fresh and its checkpoints are never continued: ``resume`` is
refused with it, and a resume from a smoke run's ``last.pt`` is refused
(``checkpoints.resume_changes``), since its data, crop and schedule are not the config's.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from recallseg.errors import ConfigError

ITERATIONS = 3
BATCH = 2
TRAINER = {"max_iters": ITERATIONS, "val_interval": ITERATIONS, "log_interval": 1, "batch_size": BATCH, "num_workers": 0, "stop_after": None}
EVALUATION = {"num_workers": 0}
# Options of datasets that generate their frames (synthetic): at most these values.
DATASET_AT_MOST = {"num_train": 8, "num_val": 2, "num_test": 2, "height": 64, "width": 128}
CROP_AT_MOST = 256  # a training crop's side (a multiple of every model's output stride)
SAMPLES = {"train": 8, "val": 2}  # file datasets: the first samples of each split


def check_smoke(config: Any) -> None:
    """Refuse a smoke run that would continue a run (its shrunken settings are not the run's)."""
    if config["trainer"].get("smoke") and config.get("resume") is not None:
        raise ConfigError(
            "trainer.smoke", "a smoke run is never continued, nor continues a run (resume is set)", "start a new run: leave out resume=..., or trainer.smoke=true"
        )  # fmt: skip


def smoke_config(config: DictConfig) -> tuple[DictConfig, list[str]]:
    """``config`` with the smoke settings when ``trainer.smoke`` is true, and the changes as
    ``key old -> new`` lines (none otherwise). ``config`` is a validated, resolved config."""
    if not config.trainer.get("smoke"):
        return config, []
    check_smoke(config)
    data = OmegaConf.to_container(config, resolve=True)
    changes: list[str] = []

    def set_value(section: dict, key: str, value: Any, where: str) -> None:
        if key in section and section[key] != value:
            changes.append(f"{where}.{key} {section[key]} -> {value}")
            section[key] = value

    for key, value in TRAINER.items():
        set_value(data["trainer"], key, min(value, data["trainer"][key]) if key == "batch_size" else value, "trainer")
    for key, value in EVALUATION.items():
        set_value(data["evaluation"], key, value, "evaluation")
    dataset = data["dataset"]
    for key, most in DATASET_AT_MOST.items():
        if isinstance(dataset.get(key), int) and not isinstance(dataset[key], bool):
            set_value(dataset, key, min(most, dataset[key]), "dataset")
    set_value(dataset, "cache", False, "dataset")  # no frame cache is built for a few samples
    for index, step in enumerate(dataset.get("train_transform") or []):
        for side in ("height", "width"):  # crops (RandomScaleCrop, albumentations' RandomCrop)
            if isinstance(step, dict) and isinstance(step.get(side), int):
                set_value(step, side, min(CROP_AT_MOST, step[side]), f"dataset.train_transform[{index}]")
    return OmegaConf.create(data), changes


def smoke_subset(dataset: Any, split: str) -> list[str]:
    """Keep the first samples of a file dataset (its ``samples`` list, ``data.base.FilePairDataset``);
    returns the change, or nothing for a dataset without one (synthetic: shrunk by its options)."""
    samples = getattr(dataset, "samples", None)
    keep = SAMPLES[split]
    if not isinstance(samples, list) or len(samples) <= keep:
        return []
    dataset.samples = samples[:keep]
    return [f"{split} samples {len(samples)} -> {keep}"]
