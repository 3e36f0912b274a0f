"""Building a training run's parts from the validated config (one place, one mechanism).

Every part is named by its section's ``_target_`` and built through ``recallseg.config.construct``:
datasets (``pipeline.builder``), the model (``models.builder``), the loss (``losses.registry``),
the optimizer and the schedule (``training.optim``). A resumed run's config comes from its
checkpoint: every part is then built as stored data (``Trust``), and the model without
downloading weights (the checkpoint holds them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from recallseg.data.base import SegmentationDataset
from recallseg.evaluation.inference import InferenceSettings, check_size_multiple
from recallseg.evaluation.memory import check_inference_memory, frame_sizes
from recallseg.evaluation.samples import evaluation_samples
from recallseg.pipeline.builder import build_dataset, check_frame_sizes
from recallseg.pipeline.data_check import check_before_training
from recallseg.pipeline.class_statistics import ClassStatistics, cached_class_statistics, read_statistics_file, warn_uniform_split
from recallseg.config.construct import Trust
from recallseg.errors import ConfigError
from recallseg.losses import LossContext, SegmentationLoss, build_loss
from recallseg.models import build_model
from recallseg.models.builder import input_divisor
from recallseg.training.cuda_graph import check_graph_support
from recallseg.training.optim import build_optimizer, build_scheduler
from recallseg.training.smoke import smoke_subset
from recallseg.runtime.device import Runtime
from recallseg.runtime.normalize import Normalizer
from recallseg.runtime.random_state import rank_seed

log = logging.getLogger("recallseg")


@dataclass
class TrainingParts:
    train_set: SegmentationDataset
    val_set: SegmentationDataset  # untransformed: validation applies dataset.val_transform itself
    network: torch.nn.Module  # what the loop calls: the model, DDP-wrapped with several processes
    model: torch.nn.Module  # the bare model: its weights are what checkpoints hold
    criterion: SegmentationLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    normalizer: Normalizer


def training_class_statistics(cfg: DictConfig, num_classes: int, classes: list[str] | None = None, trust: Trust = Trust()):
    """A function giving the training split's ``ClassStatistics`` (computed once, cached); losses call it if they need it.

    ``dataset.stats_file`` is used when set (and refused when it was computed for another dataset
    config); otherwise the statistics are read from, or computed into, the cache. The run's log
    says which statistics it uses.
    """
    memo: list[ClassStatistics] = []

    def statistics() -> ClassStatistics:
        if memo:
            return memo[0]
        dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
        split = dataset_cfg["train_split"]
        raw = build_dataset(dataset_cfg, split, transform=None, **trust.build)  # the labels themselves: no augmentation
        if dataset_cfg["stats_file"]:
            stats = read_statistics_file(dataset_cfg["stats_file"], num_classes, dataset_cfg, split, classes, dataset=raw)
        else:
            stats = cached_class_statistics(raw, dataset_cfg, split, cfg.paths.cache_dir, cfg.trainer.num_workers)
        log.info("class statistics of the %s split (%d labelled pixels): %s", split, int(stats.pixel_counts.sum()), stats.source)
        warn_uniform_split(stats, list(classes) if classes is not None else [str(c) for c in range(num_classes)], split)
        memo.append(stats)
        return stats

    return statistics


def check_class_names(classes: list[str], other: list[str], where: str) -> None:
    if list(classes) != list(other):
        raise ConfigError(
            "dataset", f"the training split has classes {classes} but {where} has {other}",
            "give both splits the same classes",
        )


def build_training(cfg: DictConfig, runtime: Runtime, trust: Trust = Trust()) -> TrainingParts:
    """Datasets, model, loss, optimizer, schedule, GradScaler and input normalisation for ``cfg``."""
    tcfg, device = cfg.trainer, runtime.device
    check_before_training(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.paths.cache_dir, tcfg.num_workers)  # dataset.check
    train_set = build_dataset(cfg.dataset, cfg.dataset.train_split, train=True, **trust.build)
    val_set = build_dataset(cfg.dataset, cfg.dataset.val_split, train=False, transform=None, **trust.build)
    check_class_names(list(train_set.classes), list(val_set.classes), f"the {cfg.dataset.val_split} split")
    if tcfg.get("smoke"):  # file datasets: their first samples (training.smoke)
        for change in smoke_subset(train_set, "train") + smoke_subset(val_set, "val"):
            log.info("smoke run: %s", change)
    classes = list(train_set.classes)

    model = build_model(cfg.model, len(classes), **trust.build, offline=not trust.trusted).to(device)
    divisor = input_divisor(model)
    check_frame_sizes(OmegaConf.to_container(cfg.dataset, resolve=True), train_set, divisor)
    settings = InferenceSettings.from_config(cfg.inference)
    check_size_multiple(settings, divisor)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # One process already normalises over its whole batch: sync_batchnorm only matters with several.
    if tcfg.sync_batchnorm and runtime.distributed and device.type != "cuda":
        raise ConfigError("trainer.sync_batchnorm", "needs CUDA (PyTorch's SyncBatchNorm)", "on CPU use trainer.freeze_batchnorm=true")
    if runtime.distributed and tcfg.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    network = model
    if runtime.distributed:
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # The common seed gave every rank the same initial weights (DDP broadcasts rank 0's
        # anyway); from here on each rank draws its own dropout masks.
        torch.manual_seed(rank_seed(cfg.seed, runtime.rank))

    statistics = training_class_statistics(cfg, len(classes), classes, trust)
    context = LossContext(len(classes), train_set.ignore_index, class_statistics=statistics)
    criterion = build_loss(cfg.loss, context, trust=trust).to(device)
    if tcfg.cuda_graph:
        check_graph_support(runtime, tcfg.nonfinite, cfg.optimizer._target_)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), device, capturable=tcfg.cuda_graph, trust=trust)
    scheduler = build_scheduler(cfg.scheduler, optimizer, tcfg.max_iters, trust)
    # The GradScaler skips steps whose gradients are not finite, without a host sync when the
    # optimizer is fused. fp16 needs it for scaling; trainer.nonfinite=skip uses it at scale 1.
    scaling = runtime.uses_grad_scaler
    scaler = torch.amp.GradScaler(
        device.type, init_scale=2.0**16 if scaling else 1.0, growth_interval=2000 if scaling else 2**31 - 1,
        enabled=scaling or tcfg.nonfinite == "skip",
    )  # fmt: skip
    normalizer = Normalizer.for_model(cfg.model, runtime)
    # Validation is met only after a stretch of training: what it cannot hold is said now.
    val_transform = evaluation_samples(cfg.dataset, val_set, True, **trust.build).transform
    split = cfg.dataset.val_split
    check_inference_memory(model, settings, frame_sizes(val_set, val_transform), device, runtime.autocast, f"the largest {split} frame")
    return TrainingParts(train_set, val_set, network, model, criterion, optimizer, scheduler, scaler, normalizer)


def describe_parts(cfg: DictConfig) -> dict[str, Any]:
    """The ``_target_`` of each part, for the run's log."""
    return {name: cfg[name]["_target_"] for name in ("dataset", "model", "loss", "optimizer", "scheduler")}


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """Keep BatchNorm layers on their running statistics (eval mode) while the rest trains.

    Common when fine-tuning with small per-GPU batches; it also makes N ranks with batch B
    compute exactly what one rank with batch N*B computes (BatchNorm statistics would
    otherwise be per rank; SyncBatchNorm, trainer.sync_batchnorm, needs CUDA)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()

