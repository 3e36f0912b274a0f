"""Score a checkpoint: rebuild model and dataset from the config stored in it, apply the
user's command-line overrides on top, evaluate, and write metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from ..data.builder import build_dataset
from ..data.loading import eval_loader
from ..metrics import format_table, metrics_from_confusion
from ..models import build_model
from .checkpoint import CheckpointError, load_checkpoint
from .evaluation import evaluate
from .reporting import write_metrics_json
from .runtime import Normalizer, init_runtime
from .trainer import import_user_modules

log = logging.getLogger("recallseg")

# Sections that belong to the evaluation run itself, never taken from the checkpoint.
EVAL_ONLY_KEYS = ("checkpoint", "output_dir", "evaluation", "inference", "predictions")


def override_keys(overrides: Iterable[str]) -> list[str]:
    """Config keys named by Hydra command-line overrides (``a.b=1``, ``+a=1``, ``~a``, ``group=choice``)."""
    keys = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key and not key.startswith("hydra"):
            keys.append(key)
    return keys


def merge_with_checkpoint(eval_cfg: DictConfig, stored: dict, overrides: Iterable[str]) -> DictConfig:
    """The stored training config, with the keys the user overrode and the eval-only sections from ``eval_cfg``."""
    merged = OmegaConf.create(stored)
    OmegaConf.set_struct(merged, False)
    for key in EVAL_ONLY_KEYS:
        if key in eval_cfg:
            merged[key] = OmegaConf.to_container(eval_cfg, resolve=True)[key]
    for key in override_keys(overrides):
        if key.split(".")[0] in EVAL_ONLY_KEYS:
            continue
        value = OmegaConf.select(eval_cfg, key, default=None)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(merged, key, value, force_add=True)
    return merged


def evaluate_checkpoint(eval_cfg: DictConfig, overrides: Iterable[str] = ()) -> dict:
    """Evaluate ``eval_cfg.checkpoint`` on ``dataset.split``; returns the metrics (also written to metrics.json)."""
    checkpoint_path = Path(eval_cfg.checkpoint)
    state = load_checkpoint(checkpoint_path)
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{checkpoint_path} has no model weights or config; was it written by recallseg train?")
    cfg = merge_with_checkpoint(eval_cfg, state["config"], overrides)
    import_user_modules(cfg.get("imports"))
    runtime = init_runtime(cfg.trainer.device, cfg.trainer.amp, cfg.trainer.channels_last)
    split = cfg.dataset.get("split", "val")
    dataset = build_dataset(cfg.dataset, split, train=False)
    classes = list(dataset.classes)
    stored_classes = state.get("classes", classes)
    if len(stored_classes) != len(classes):
        raise CheckpointError(
            f"{checkpoint_path} was trained for {len(stored_classes)} classes but dataset "
            f"{type(dataset).__name__} ({split} split) has {len(classes)}; evaluate it on a dataset with the same classes"
        )
    model = build_model({**OmegaConf.to_container(cfg.model, resolve=True), "encoder_weights": None}, len(classes))
    model.load_state_dict(state["model"])
    model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=__import__("torch").channels_last)
    ecfg = cfg.get("evaluation", {}) or {}
    batch_size = ecfg.get("batch_size") or cfg.trainer.get("val_batch_size") or cfg.trainer.batch_size
    loader = eval_loader(dataset, batch_size, ecfg.get("num_workers", 0), runtime.rank, runtime.world_size, pin_memory=runtime.device.type == "cuda")
    normalizer = Normalizer(cfg.model.mean, cfg.model.std, runtime)
    matrix = evaluate(model, loader, normalizer, runtime, len(classes), dataset.ignore_index)
    metrics = metrics_from_confusion(matrix.compute(), classes)
    if runtime.is_main:
        print(format_table(metrics), flush=True)
        out = Path(cfg.output_dir)
        write_metrics_json(out / "metrics.json", metrics, iteration=int(state.get("iteration", 0)), checkpoint=str(checkpoint_path), split=split)
        log.info("metrics written to %s", out / "metrics.json")
    return metrics
