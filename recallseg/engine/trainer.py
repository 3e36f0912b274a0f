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
import signal
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
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .evaluation import evaluate
from .cuda_graph import GraphedStep, check_graph_support
from .optim import build_optimizer, build_scheduler, current_lr
from .reporting import PerClassHistory, log_metrics, write_metrics_json
from .runtime import Normalizer, Runtime, init_runtime, seed_everything, to_target

log = logging.getLogger("recallseg")

MONITOR_KEYS = ("mIoU", "mAcc", "aAcc", "mPrecision")
NONFINITE_POLICIES = ("stop", "skip")
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Interrupted(SystemExit):
    """Raised after a signal: the current step finished and last.pt was saved."""


class StopSignal:
    """Remembers SIGTERM/SIGINT instead of dying mid-step; the loop checks it between steps."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in EXIT_CODES:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self.received = signum
        log.warning("received %s: finishing the current step, then saving last.pt", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


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


def rng_states_of_all_ranks(distributed: bool, world_size: int) -> list[dict[str, Any]]:
    """Every rank's ``rng_state()``, in rank order. A collective: every rank must call it."""
    state = rng_state()
    if not distributed:
        return [state]
    states: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def rng_state_for_rank(checkpoint: dict[str, Any], rank: int, world_size: int) -> tuple[dict[str, Any], bool]:
    """The random state this rank resumes with, and whether it is this rank's own: it is when the
    checkpoint has one per rank for this many ranks (or a single process resumes one); otherwise
    it is rank 0's (``rng``), which cannot reproduce other ranks' dropout."""
    per_rank = checkpoint.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        return per_rank[rank], True
    if world_size > 1:
        log.warning(
            "the checkpoint holds random states for %s rank(s), this run has %d: rank 0 resumes its own and the other "
            "ranks are reseeded, so dropout will not repeat an uninterrupted run", len(per_rank) if per_rank else 1, world_size,
        )
    return checkpoint["rng"], rank == 0


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
        self.runtime: Runtime = init_runtime(tcfg.device, tcfg.amp, tcfg.channels_last, deterministic=tcfg.get("deterministic", False))
        seed_everything(cfg.seed)
        self.nonfinite = tcfg.get("nonfinite", "stop")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"trainer.nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
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
        if tcfg.get("sync_batchnorm", False) and self.runtime.device.type != "cuda":
            raise ValueError("trainer.sync_batchnorm=true needs CUDA (PyTorch's SyncBatchNorm); on CPU use trainer.freeze_batchnorm=true")
        if self.runtime.distributed and tcfg.get("sync_batchnorm", False):
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.module = self.model
        if self.runtime.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            # The common seed gave every rank the same initial weights (DDP broadcasts rank 0's
            # anyway); from here on each rank draws its own dropout masks.
            torch.manual_seed(cfg.seed + 7919 * self.runtime.rank)
        context = LossContext(self.num_classes, self.ignore_index, class_pixel_counts=self._training_pixel_counts)
        self.criterion = build_loss(cfg.loss, context).to(device)
        self.cuda_graph = bool(tcfg.get("cuda_graph", False))
        if self.cuda_graph:
            check_graph_support(self.runtime, self.nonfinite, cfg.optimizer._target_)
        self.optimizer = build_optimizer(cfg.optimizer, self.module.parameters(), device, capturable=self.cuda_graph)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, tcfg.max_iters)
        # The GradScaler skips steps whose gradients are not finite, without a host sync when the
        # optimizer is fused. fp16 needs it for scaling; trainer.nonfinite=skip uses it at scale 1.
        use_scaler = self.runtime.uses_grad_scaler or self.nonfinite == "skip"
        scale = 2.0**16 if self.runtime.uses_grad_scaler else 1.0
        growth = 2000 if self.runtime.uses_grad_scaler else 2**31 - 1
        self.scaler = torch.amp.GradScaler(device.type, init_scale=scale, growth_interval=growth, enabled=use_scaler)
        self.normalizer = Normalizer(cfg.model.mean, cfg.model.std, self.runtime)
        self._graphed = GraphedStep(self._optimize, device) if self.cuda_graph else None
        self._found_inf: torch.Tensor | None = None

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
        # The counts depend on the labels only: leave out transforms, evaluation splits and caching.
        unrelated = ("train_transform", "val_transform", "split", "val_split", "cache", "cache_dir", "size_divisor")
        key_cfg = {k: v for k, v in dataset_cfg.items() if k not in unrelated}
        return cached_class_pixel_counts(raw, key_cfg, dataset_cfg.get("train_split", "train"), self.cfg.paths.cache_dir, self.cfg.trainer.num_workers)

    # -- checkpoints --
    def state_dict(self, rng_per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything a resume needs; ``rng_per_rank`` (from ``rng_states_of_all_ranks``) adds each DDP rank's random state."""
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": self.criterion.state_dict(),
            "iteration": self.iteration,
            "best_score": self.best_score,
            "monitor": self.monitor,
            "classes": self.classes,
            "palette": [list(map(int, colour)) for colour in self.train_set.palette] if self.train_set.palette else None,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "rng": rng_state(),
        }
        if rng_per_rank is not None and len(rng_per_rank) > 1:
            state["rng_per_rank"] = rng_per_rank
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Everything but the random states, which ``fit`` restores once the data stream exists."""
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a checkpoint of the other mode stores lr as float/tensor
            lr = group["lr"]
            if self.cuda_graph and not isinstance(lr, torch.Tensor):
                group["lr"] = torch.tensor(float(lr), device=self.runtime.device)
            elif not self.cuda_graph and isinstance(lr, torch.Tensor):
                group["lr"] = float(lr)
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.criterion.load_state_dict(state["loss"])
        self.iteration = int(state["iteration"])
        self.best_score = float(state["best_score"])

    def _newest_checkpoint(self) -> Path | None:
        """The readable checkpoint with the highest iteration in the run directory."""
        newest, newest_iteration = None, -1
        for path in sorted(self.checkpoint_dir.glob("*.pt")) if self.checkpoint_dir.is_dir() else []:
            try:
                iteration = int(load_checkpoint(path)["iteration"])
            except (CheckpointError, KeyError) as error:
                log.warning("resume=auto: skipping %s (%s)", path, error)
                continue
            if iteration > newest_iteration:
                newest, newest_iteration = path, iteration
        return newest

    def _resume_state(self) -> dict[str, Any] | None:
        """The checkpoint to continue from, or None for a fresh run (which must not clobber one)."""
        resume = self.cfg.get("resume")
        if resume in (None, "", False):
            existing = sorted(self.checkpoint_dir.glob("*.pt")) if self.checkpoint_dir.is_dir() else []
            if existing:
                raise FileExistsError(
                    f"{self.checkpoint_dir} already holds checkpoints ({', '.join(p.name for p in existing)}); "
                    "recallseg never overwrites a run. Continue it with resume=auto, or choose another hydra.run.dir."
                )
            return None
        path = self._newest_checkpoint() if resume == "auto" else Path(resume)
        if path is None:
            log.info("resume=auto: no checkpoint in %s, starting from scratch", self.checkpoint_dir)
            return None
        # On the CPU: random states must be CPU tensors; load_state_dict moves the rest to the device.
        state = load_checkpoint(path, map_location="cpu")
        self.load_state_dict(state)
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return state

    def _save(self, name: str, rng_per_rank: list[dict[str, Any]] | None = None) -> Path:
        """Write a checkpoint; refuses weights or statistics that are not finite (a NaN never reaches disk)."""
        for key, tensor in self.module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise FloatingPointError(
                    f"model tensor {key!r} is not finite at iteration {self.iteration}; not saving {name}. "
                    "Lower optimizer.lr, set trainer.grad_clip, or check the data."
                )
        path = self.checkpoint_dir / name
        save_checkpoint(self.state_dict(rng_per_rank), path)
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
        resumed = self._resume_state()
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
        if resumed is not None:  # after the loader drew its seed, as the uninterrupted run's loader did at its start
            state, own = rng_state_for_rank(resumed, runtime.rank, runtime.world_size)
            set_rng_state(state)
            if not own:  # rank 0's state on every rank would give all ranks the same dropout masks
                torch.manual_seed(cfg.seed + 7919 * runtime.rank + self.iteration)
        self._train_mode()
        stop_at = tcfg.max_iters
        if tcfg.get("stop_after"):
            stop_at = min(stop_at, self.iteration + int(tcfg.stop_after))
        self._reset_window()
        metrics = None
        bar = tqdm(total=tcfg.max_iters, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True, disable=not runtime.is_main)
        self._bar = bar
        with StopSignal() as stop:  # also covers the final save, so a second SIGTERM cannot cut it short
            while self.iteration < stop_at:
                images, masks = next(batches)
                loss = self.step(images, masks)
                self._window_loss += torch.nan_to_num(loss.detach(), nan=0.0, posinf=0.0, neginf=0.0)
                bad = ~torch.isfinite(loss.detach())
                if self._found_inf is not None:  # nonfinite=skip: steps the GradScaler skipped for inf gradients
                    bad = bad | (self._found_inf > 0)
                self._window_bad += bad
                self._first_bad = torch.where(bad & (self._first_bad < 0), self.iteration + 1, self._first_bad)
                self._window_steps += 1
                self.iteration += 1
                bar.update(1)
                if self.iteration % tcfg.log_interval == 0 or self.iteration == stop_at:
                    self._end_log_window()
                if self.iteration % tcfg.val_interval == 0 or self.iteration == tcfg.max_iters:
                    metrics = self._validate_and_checkpoint()
                if self._should_stop(stop, stop_at):
                    break
            bar.close()
            if self.iteration < tcfg.max_iters:  # stopped early (signal or trainer.stop_after): keep the place
                if self._window_steps:
                    self._end_log_window()
                rng_per_rank = rng_states_of_all_ranks(runtime.distributed, runtime.world_size)
                if runtime.is_main:
                    self._save("last.pt", rng_per_rank)
                    self.writer.close()
                    log.info("stopped at iteration %d; continue with resume=auto (same hydra.run.dir)", self.iteration)
                if runtime.distributed:  # no rank exits (and makes torchrun kill the others) before last.pt is written
                    torch.distributed.barrier()
                if stop.received is not None:
                    raise Interrupted(EXIT_CODES[stop.received])
                return metrics or {}
        if metrics is None:  # resumed at max_iters: nothing left to train, still report
            metrics = self.validate()
        if runtime.is_main:
            print(format_table(metrics), flush=True)
            write_metrics_json(self.output_dir / "metrics.json", metrics, iteration=self.iteration, checkpoint=str(self.checkpoint_dir / "last.pt"))
            self.writer.close()
        return metrics

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.trainer.get("freeze_batchnorm", False):
            freeze_batchnorm(self.model)

    def _should_stop(self, stop: StopSignal, stop_at: int) -> bool:
        """Whether a signal asks to stop. Across ranks the flag is agreed on at log intervals, so
        every rank stops after the same step (one tiny all-reduce per interval, none per step)."""
        if not self.runtime.distributed:
            return stop.received is not None
        if self.iteration % self.cfg.trainer.log_interval and self.iteration != stop_at:
            return False
        flag = torch.tensor(1 if stop.received is not None else 0, device=self.runtime.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and stop.received is None:
            stop.received = signal.SIGTERM
        return bool(flag.item())

    def _reset_window(self) -> None:
        device = self.runtime.device
        self._window_loss = torch.zeros((), device=device)
        self._window_bad = torch.zeros((), dtype=torch.int64, device=device)
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self._window_steps = 0
        self._window_start = (time.perf_counter(), self.iteration)

    def _end_log_window(self) -> None:
        """Read the window's statistics (the only host sync of the loop), apply the non-finite policy, log."""
        steps = self._window_steps
        bad, first_bad = int(self._window_bad), int(self._first_bad)
        good = steps - bad
        mean_loss = float(self._window_loss) / good if good else float("nan")
        elapsed, start_iteration = time.perf_counter() - self._window_start[0], self._window_start[1]
        speed = (self.iteration - start_iteration) / max(elapsed, 1e-9)
        self._reset_window()
        if bad:
            where = f"{bad} of iterations {start_iteration + 1}..{self.iteration} (first: {first_bad})"
            if self.nonfinite == "stop":
                raise FloatingPointError(
                    f"non-finite training loss at {where}. Lower optimizer.lr, set trainer.grad_clip, check the data, "
                    "or set trainer.nonfinite=skip to skip such steps."
                )
            log.warning("skipped %s: non-finite loss or gradients, no update applied", where)
        self._log_train(mean_loss, speed, skipped=bad)

    def step(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """One optimisation step; returns the loss as a device tensor (no host sync)."""
        loss = self._graphed(images, masks) if self._graphed is not None else self._optimize(images, masks)
        self.scheduler.step()  # outside any graph: it sets the next learning rate
        return loss

    def _optimize(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Forward, loss, backward and optimizer update (what ``trainer.cuda_graph`` captures)."""
        x = self.normalizer(images)
        target = to_target(masks, self.runtime.device)
        with self.runtime.autocast():
            logits = self.model(x)
            loss = self.criterion(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.trainer.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.trainer.grad_clip)
        self.scaler.step(self.optimizer)
        if self.nonfinite == "skip":
            # Read before update() clears it (no sync: a device tensor).
            self._found_inf = sum(self.scaler._found_inf_per_device(self.optimizer).values())
        if self.runtime.uses_grad_scaler:
            self.scaler.update()
        else:
            self.scaler.update(1.0)  # scale 1 for good: backing off after each skip would drift to 0
        return loss

    def _log_train(self, mean_loss: float, speed: float, skipped: int = 0) -> None:
        if not self.runtime.is_main:
            return
        step = self.iteration
        if math.isfinite(mean_loss):
            self.writer.add_scalar("train/loss", mean_loss, step)
        self.writer.add_scalar("train/skipped_steps", skipped, step)
        self.writer.add_scalar("train/lr", current_lr(self.optimizer), step)
        self.writer.add_scalar("train/iterations_per_second", speed, step)
        for name, values in self.criterion.extra_logs().items():
            values = values.float().cpu()
            for class_name, value in zip(self.classes, values.tolist()):
                self.writer.add_scalar(f"train/{name}/{class_name}", value, step)
            if name == "recall_weight" or name.endswith("/recall_weight"):
                self.weight_history.append(values)
                self.writer.add_image(f"train/{name}_heatmap", self.weight_history.image(), step, dataformats="HWC")
        log.info("iter %d/%d  loss %.4f  lr %.3e  %.2f it/s", step, self.cfg.trainer.max_iters, mean_loss, current_lr(self.optimizer), speed)
        self._bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{current_lr(self.optimizer):.2e}")

    def _validate_and_checkpoint(self) -> dict:
        metrics = self.validate()
        self._train_mode()
        rng_per_rank = rng_states_of_all_ranks(self.runtime.distributed, self.runtime.world_size)
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
            self._save("last.pt", rng_per_rank)
            if improved:
                self._save("best.pt", rng_per_rank)
                log.info("new best %s %.4f: saved best.pt", self.monitor, score)
        return metrics


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """Keep BatchNorm layers on their running statistics (eval mode) while the rest trains.

    Common when fine-tuning with small per-GPU batches; it also makes N ranks with batch B
    compute exactly what one rank with batch N*B computes (BatchNorm statistics would
    otherwise be per rank; SyncBatchNorm, trainer.sync_batchnorm, needs CUDA)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def train(cfg: DictConfig) -> dict:
    """Train from a composed config; returns the final validation metrics."""
    return Trainer(cfg).fit()
