"""Score a checkpoint: rebuild model and dataset from the config stored in it, apply the
user's command-line overrides on top, evaluate, and write the report (evaluation_report.py)
and, on request, the predictions (predictions.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from ..data.builder import build_dataset
from ..data.transforms import build_transform
from ..metrics import format_table, metrics_from_confusion
from ..models import build_model
from .checkpoint import CheckpointError, load_checkpoint
from .evaluation import evaluate
from .evaluation_data import EvaluationSamples, evaluation_loader, sample_names
from .evaluation_report import write_evaluation_report
from .inference import Inference, InferenceSettings
from .predictions import PredictionWriter
from .runtime import Normalizer, Runtime, init_runtime
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


def read_checkpoint(path: str | Path) -> dict:
    """A recallseg checkpoint with model weights and the training config (CheckpointError otherwise)."""
    path = Path(path)
    state = load_checkpoint(path)
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{path} has no model weights or config; was it written by recallseg train?")
    return state


def check_class_count(state: dict, classes: list[str], checkpoint_path: Path, where: str) -> None:
    stored_classes = state.get("classes", classes)
    if len(stored_classes) != len(classes):
        raise CheckpointError(
            f"{checkpoint_path} was trained for {len(stored_classes)} classes but {where} has {len(classes)}; "
            "evaluate it on a dataset with the same classes"
        )


def model_from_checkpoint(state: dict, cfg: DictConfig, num_classes: int, runtime: Runtime, checkpoint_path: Path) -> torch.nn.Module:
    """The checkpoint's model (built from ``cfg.model``, never downloading weights) on the runtime's device, in eval mode."""
    model = build_model({**OmegaConf.to_container(cfg.model, resolve=True), "encoder_weights": None}, num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"the weights in {checkpoint_path} do not fit model {cfg.model.get('arch')}/{cfg.model.get('encoder_name')} "
            f"({first}); do not override model.* when evaluating a checkpoint"
        ) from None
    model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def evaluate_checkpoint(eval_cfg: DictConfig, overrides: Iterable[str] = ()) -> dict:
    """Evaluate ``eval_cfg.checkpoint`` on ``dataset.split``; returns the metrics (also written to metrics.json)."""
    checkpoint_path = Path(eval_cfg.checkpoint)
    state = read_checkpoint(checkpoint_path)
    cfg = merge_with_checkpoint(eval_cfg, state["config"], overrides)
    import_user_modules(cfg.get("imports"))
    settings = InferenceSettings.from_config(cfg.get("inference"))
    ecfg = cfg.get("evaluation", {}) or {}
    pcfg = cfg.get("predictions", {}) or {}
    runtime = init_runtime(cfg.trainer.device, cfg.trainer.amp, cfg.trainer.channels_last)
    split = cfg.dataset.get("split", "val")
    dataset = build_dataset(cfg.dataset, split, train=False, transform=None)
    classes = list(dataset.classes)
    check_class_count(state, classes, checkpoint_path, f"dataset {type(dataset).__name__} ({split} split)")
    model = model_from_checkpoint(state, cfg, len(classes), runtime, checkpoint_path)

    out = Path(cfg.output_dir)
    writer = None
    if pcfg.get("save", False):
        writer = PredictionWriter(
            pcfg.get("dir") or out / "predictions", pcfg.get("format", "color"), sample_names(dataset), classes,
            palette=dataset.palette, alpha=pcfg.get("alpha", 0.5),
        )  # fmt: skip
    # No padding here: inference pads to the model's stride and crops back (see evaluation_data.py).
    transform = build_transform(cfg.dataset.get("val_transform"), ignore_index=dataset.ignore_index, where="dataset.val_transform")
    full_resolution = bool(ecfg.get("full_resolution", True))
    samples = EvaluationSamples(dataset, transform, full_resolution=full_resolution, keep_image=writer is not None and writer.needs_image)
    batch_size = ecfg.get("batch_size") or cfg.trainer.get("val_batch_size") or cfg.trainer.batch_size
    num_workers = ecfg.get("num_workers", 0)
    loader = evaluation_loader(samples, batch_size, num_workers, runtime.rank, runtime.world_size, pin_memory=runtime.device.type == "cuda")
    normalizer = Normalizer(cfg.model.mean, cfg.model.std, runtime)

    def save(prediction: torch.Tensor, index: int, batch: dict) -> None:
        image = batch["source_image"][batch["index"].index(index)] if writer.needs_image else None
        writer.write(prediction, index, image)

    log.info("evaluating %s on %s/%s (%d images), inference %s", checkpoint_path, type(dataset).__name__, split, len(dataset), settings.as_dict())
    matrix = evaluate(
        model, loader, normalizer, runtime, len(classes), dataset.ignore_index, predict=Inference(settings), on_prediction=save if writer else None
    )
    confusion = matrix.compute()
    metrics = metrics_from_confusion(confusion, classes)
    if runtime.is_main:
        if int(confusion.sum()) == 0:
            log.warning("no labelled pixels in the %s split (a test split without public labels?): every metric is n/a", split)
        print(format_table(metrics), flush=True)
        extra: dict[str, Any] = {
            "iteration": int(state.get("iteration", 0)),
            "checkpoint": str(checkpoint_path),
            "split": split,
            "dataset": type(dataset).__name__,
            "images": len(dataset),
            "inference": settings.as_dict(),
            "evaluation": {"full_resolution": full_resolution, "batch_size": int(batch_size), "amp": str(runtime.amp_dtype or "off").replace("torch.", "")},
        }
        if writer is not None:
            extra["predictions"] = {"format": writer.format, "dir": str(writer.directory)}
        files = write_evaluation_report(out, metrics, confusion.cpu().numpy(), classes, **extra)
        log.info("metrics written to %s (also %s)", files["metrics.json"], ", ".join(name for name in files if name != "metrics.json"))
        if writer is not None:
            log.info("%d predictions (%s) written to %s", writer.written, writer.format, writer.directory)
    return metrics
