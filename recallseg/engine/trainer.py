"""The iteration-based training loop.

One code path for CPU and CUDA: autocast for mixed precision (bf16 by default on CUDA,
fp16 with a GradScaler, off on CPU), channels-last on CUDA, uint8 batches normalised on
the device. The step itself never synchronises with the host: the loss is accumulated as
a tensor and read only at log intervals.
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..data.builder import build_dataset
from ..data.loading import eval_loader, train_loader
from ..data.statistics import cached_class_pixel_counts, read_statistics
from ..losses import LossContext, build_loss
from ..metrics import format_table, metrics_from_confusion
from ..models import build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluation import evaluate
from .optim import build_optimizer, build_scheduler
from .reporting import PerClassHistory, log_metrics, write_metrics_json
from .runtime import Normalizer, Runtime, init_runtime, seed_everything

log = logging.getLogger("recallseg")

MONITOR_KEYS = ("mIoU", "mAcc", "aAcc", "mPrecision")


def import_user_modules(modules) -> None:
    """Import the modules listed in ``imports`` so that their losses/datasets register themselves."""
    for name in modules or []:
        importlib.import_module(name)


def rng_state() -> dict[str, Any]:
    """All random states as tensors and plain data (loadable with weights_only=True)."""
    state = {
        "python": random.getstate(),
        "numpy": [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, values, *rest = state["python"]
    random.setstate((version, tuple(values), *rest))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Builds everything from the config, then ``fit()`` runs the loop and returns the final metrics."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        tcfg = cfg.trainer
        import_user_modules(cfg.get("imports"))
        self.output_dir = Path(cfg.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.runtime: Runtime = init_runtime(tcfg.device, tcfg.amp, tcfg.channels_last)
        seed_everything(cfg.seed)
        device = self.runtime.device

        dataset_cfg = cfg.dataset
        self.train_set = build_dataset(dataset_cfg, dataset_cfg.get("train_split", "train"), train=True)
        self.val_set = build_dataset(dataset_cfg, dataset_cfg.get("val_split", "val"), train=False)
        self.classes = list(self.train_set.classes)
        self.num_classes = len(self.classes)
        self.ignore_index = self.train_set.ignore_index

        self.model = build_model(cfg.model, self.num_classes).to(device)
        if self.runtime.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.runtime.distributed and tcfg.get("sync_batchnorm", False):
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.module = self.model
        if self.runtime.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        context = LossContext(self.num_classes, self.ignore_index, class_pixel_counts=self._training_pixel_counts)
        self.criterion = build_loss(cfg.loss, context).to(device)
        self.optimizer = build_optimizer(cfg.optimizer, self.module.parameters(), device)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, tcfg.max_iters)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.runtime.uses_grad_scaler)
        self.normalizer = Normalizer(cfg.model.mean, cfg.model.std, self.runtime)

        monitor = str(tcfg.get("monitor", "mIoU")).removeprefix("val/")
        if monitor not in MONITOR_KEYS:
            raise ValueError(f"trainer.monitor must be one of {['val/' + k for k in MONITOR_KEYS]}, got {tcfg.monitor!r}")
        self.monitor = monitor
        self.iteration = 0
        self.best_score = -math.inf
        self.writer = None
        self.weight_history = PerClassHistory(self.classes)

    # -- data statistics, asked for by losses that need them (through LossContext) --
    def _training_pixel_counts(self) -> torch.Tensor:
        dataset_cfg = OmegaConf.to_container(self.cfg.dataset, resolve=True)
        if dataset_cfg.get("stats_file"):
            return read_statistics(dataset_cfg["stats_file"], self.num_classes)
        raw = build_dataset(dataset_cfg, dataset_cfg.get("train_split", "train"), transform=None)
        key_cfg = {k: v for k, v in dataset_cfg.items() if k not in ("train_transform", "val_transform", "split", "val_split")}
        return cached_class_pixel_counts(raw, key_cfg, dataset_cfg.get("train_split", "train"), self.cfg.paths.cache_dir, self.cfg.trainer.num_workers)

    # -- checkpoints --
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": self.criterion.state_dict(),
            "iteration": self.iteration,
            "best_score": self.best_score,
            "monitor": self.monitor,
            "classes": self.classes,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.criterion.load_state_dict(state["loss"])
        self.iteration = int(state["iteration"])
        self.best_score = float(state["best_score"])
        set_rng_state(state["rng"])

    def _prepare_output_dir(self) -> None:
        resume = self.cfg.get("resume")
        existing = sorted(self.checkpoint_dir.glob("*.pt")) if self.checkpoint_dir.is_dir() else []
        if resume in (None, "", False):
            if existing:
                raise FileExistsError(
                    f"{self.checkpoint_dir} already holds checkpoints ({', '.join(p.name for p in existing)}); "
                    "recallseg never overwrites a run. Continue it with resume=auto, or choose another hydra.run.dir."
                )
            return
        path = self.checkpoint_dir / "last.pt" if resume == "auto" else Path(resume)
        if resume == "auto" and not path.is_file():
            log.info("resume=auto: no checkpoint in %s, starting from scratch", self.checkpoint_dir)
            return
        self.load_state_dict(load_checkpoint(path, map_location=self.runtime.device))
        log.info("resumed from %s at iteration %d", path, self.iteration)

    def _save(self, name: str) -> Path:
        path = self.checkpoint_dir / name
        save_checkpoint(self.state_dict(), path)
        return path

    # -- validation --
    def validate(self) -> dict:
        tcfg = self.cfg.trainer
        loader = eval_loader(
            self.val_set, tcfg.get("val_batch_size") or tcfg.batch_size, tcfg.num_workers, self.runtime.rank, self.runtime.world_size,
            pin_memory=self.runtime.device.type == "cuda",
        )
        matrix = evaluate(self.module, loader, self.normalizer, self.runtime, self.num_classes, self.ignore_index)
        return metrics_from_confusion(matrix.compute(), self.classes)

    # -- the loop --
    def fit(self) -> dict:
        cfg, tcfg, runtime = self.cfg, self.cfg.trainer, self.runtime
        self._prepare_output_dir()
        if runtime.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.iteration or None)
            log.info("run directory: %s", self.output_dir)
            log.info(
                "device %s, precision %s, channels_last %s, %d training / %d validation images, %d classes",
                runtime.device, runtime.amp_dtype or "float32", runtime.channels_last, len(self.train_set), len(self.val_set), self.num_classes,
            )
        batches = iter(
            train_loader(
                self.train_set, tcfg.batch_size, cfg.seed, tcfg.num_workers, self.iteration, runtime.rank, runtime.world_size,
                pin_memory=runtime.device.type == "cuda",
            )
        )
        self.model.train()
        running_loss = torch.zeros((), device=runtime.device)
        running_count = 0
        metrics = None
        bar = tqdm(total=tcfg.max_iters, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True, disable=not runtime.is_main)
        last_log_time, last_log_iteration = time.perf_counter(), self.iteration
        while self.iteration < tcfg.max_iters:
            images, masks = next(batches)
            loss = self.step(images, masks)
            running_loss += loss.detach()
            running_count += 1
            self.iteration += 1
            bar.update(1)
            if self.iteration % tcfg.log_interval == 0 or self.iteration == tcfg.max_iters:
                mean_loss = (running_loss / running_count).item()  # the only sync, once per log interval
                running_loss.zero_()
                running_count = 0
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(
                        f"non-finite training loss ({mean_loss}) in iterations {self.iteration - tcfg.log_interval + 1}..{self.iteration}; "
                        "lower optimizer.lr, set trainer.grad_clip, or check the data"
                    )
                now = time.perf_counter()
                speed = (self.iteration - last_log_iteration) / max(now - last_log_time, 1e-9)
                last_log_time, last_log_iteration = now, self.iteration
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                self._log_train(mean_loss, speed)
            if self.iteration % tcfg.val_interval == 0 or self.iteration == tcfg.max_iters:
                metrics = self._validate_and_checkpoint()
        bar.close()
        if metrics is None:  # resumed at max_iters: nothing left to train, still report
            metrics = self.validate()
        if runtime.is_main:
            print(format_table(metrics), flush=True)
            write_metrics_json(self.output_dir / "metrics.json", metrics, iteration=self.iteration, checkpoint=str(self.checkpoint_dir / "last.pt"))
            self.writer.close()
        return metrics

    def step(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """One optimisation step; returns the loss as a device tensor (no host sync)."""
        x = self.normalizer(images)
        target = masks.to(self.runtime.device, non_blocking=True)
        with self.runtime.autocast():
            logits = self.model(x)
            loss = self.criterion(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.trainer.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.trainer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss

    def _log_train(self, mean_loss: float, speed: float) -> None:
        if not self.runtime.is_main:
            return
        step = self.iteration
        self.writer.add_scalar("train/loss", mean_loss, step)
        self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], step)
        self.writer.add_scalar("train/iterations_per_second", speed, step)
        for name, values in self.criterion.extra_logs().items():
            values = values.float().cpu()
            for class_name, value in zip(self.classes, values.tolist()):
                self.writer.add_scalar(f"train/{name}/{class_name}", value, step)
            if name == "recall_weight" or name.endswith("/recall_weight"):
                self.weight_history.append(values)
                self.writer.add_image(f"train/{name}_heatmap", self.weight_history.image(), step, dataformats="HWC")
        log.info("iter %d/%d  loss %.4f  lr %.3e  %.2f it/s", step, self.cfg.trainer.max_iters, mean_loss, self.scheduler.get_last_lr()[0], speed)

    def _validate_and_checkpoint(self) -> dict:
        metrics = self.validate()
        if self.runtime.is_main:
            log_metrics(self.writer, metrics, self.iteration)
            log.info(
                "val @ %d: mIoU %.4f  mAcc %.4f  aAcc %.4f  mPrecision %.4f",
                self.iteration, metrics["mIoU"], metrics["mAcc"], metrics["aAcc"], metrics["mPrecision"],
            )
            score = metrics[self.monitor]
            improved = math.isfinite(score) and score > self.best_score
            if improved:
                self.best_score = score
            self._save("last.pt")
            if improved:
                self._save("best.pt")
                log.info("new best %s %.4f: saved best.pt", self.monitor, score)
        return metrics


def train(cfg: DictConfig) -> dict:
    """Train from a composed config; returns the final validation metrics."""
    return Trainer(cfg).fit()
