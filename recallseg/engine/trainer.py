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
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data.loading import train_loader
from ..metrics import format_table, metrics_from_confusion
from ..errors import UserError
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .cuda_graph import GraphedStep
from .evaluation import evaluate
from .evaluation_data import evaluation_loader, evaluation_samples
from .inference import Inference, InferenceSettings
from .reporting import log_metrics, write_metrics_json
from .resume_changes import apply_optimizer_options, check_resumable
from .runtime import Runtime, init_runtime, seed_everything, to_target
from .setup import build_training, describe_parts
from .training_log import TrainingLogger, TrainingWindow

log = logging.getLogger("recallseg")

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class RunRefused(UserError):
    """The run directory cannot be used as asked; nothing in it was changed."""


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
    """Builds every part from the (validated) config, then ``fit()`` runs the loop and returns the final metrics."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        tcfg = cfg.trainer
        self.output_dir = Path(cfg.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.runtime: Runtime = init_runtime(tcfg.device, tcfg.amp, tcfg.channels_last, deterministic=tcfg.deterministic)
        seed_everything(cfg.seed)
        self.nonfinite = tcfg.nonfinite
        parts = build_training(cfg, self.runtime)
        self.train_set, self.val_set = parts.train_set, parts.val_set
        self.model, self.module, self.criterion = parts.model, parts.module, parts.criterion
        self.optimizer, self.scheduler, self.scaler, self.normalizer = parts.optimizer, parts.scheduler, parts.scaler, parts.normalizer
        self.classes = list(self.train_set.classes)
        self.num_classes = len(self.classes)
        self.ignore_index = self.train_set.ignore_index
        self.cuda_graph = tcfg.cuda_graph
        self._graphed = GraphedStep(self._optimize, self.runtime.device) if self.cuda_graph else None
        self._found_inf: torch.Tensor | None = None
        self.monitor = tcfg.monitor.removeprefix("val/")
        self.iteration = 0
        self.best_score = -math.inf
        self.writer = None
        # Validation scores exactly as evaluate.py does (engine.evaluation_data), with cfg.inference.
        self.validation_samples = evaluation_samples(cfg.dataset, self.val_set, cfg.evaluation.full_resolution)
        self.inference = Inference(InferenceSettings.from_config(cfg.inference))

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
        resume = self.cfg.resume
        if resume is None:
            refuse_existing_run(self.checkpoint_dir)
            return None
        path = self._newest_checkpoint() if resume == "auto" else Path(resume)
        if path is None:
            log.info("resume=auto: no checkpoint in %s, starting from scratch", self.checkpoint_dir)
            return None
        # On the CPU: random states must be CPU tensors; load_state_dict moves the rest to the device.
        state = load_checkpoint(path, map_location="cpu")
        new = OmegaConf.to_container(self.cfg, resolve=True)
        changes = check_resumable(path, state.get("config", {}), new, state.get("classes", self.classes), self.classes)
        self.load_state_dict(state)
        changed = {key.split(".", 1)[1] for key in changes if key.startswith("optimizer.")}
        apply_optimizer_options(self.optimizer, self.scheduler, {k: v for k, v in new["optimizer"].items() if k in changed})
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

    # -- validation: the evaluate.py protocol (engine.evaluation) --
    def validate(self) -> dict:
        cfg = self.cfg
        loader = evaluation_loader(
            self.validation_samples, cfg.evaluation.batch_size or cfg.trainer.batch_size, cfg.evaluation.num_workers,
            self.runtime.rank, self.runtime.world_size, pin_memory=self.runtime.device.type == "cuda",
        )  # fmt: skip
        matrix = evaluate(self.module, loader, self.normalizer, self.runtime, self.num_classes, self.ignore_index, predict=self.inference)
        return metrics_from_confusion(matrix.compute(), self.classes)

    # -- the loop --
    def fit(self) -> dict:
        cfg, tcfg, runtime = self.cfg, self.cfg.trainer, self.runtime
        resumed = self._resume_state()
        bar = tqdm(total=tcfg.max_iters, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True, disable=not runtime.is_main)
        if runtime.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.iteration or None)
            self.logger = TrainingLogger(self.writer, self.classes, tcfg.max_iters, bar)
            log.info("run directory: %s", self.output_dir)
            log.info("parts: %s", describe_parts(cfg))
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
        stop_at = tcfg.max_iters if tcfg.stop_after is None else min(tcfg.max_iters, self.iteration + tcfg.stop_after)
        self.window = TrainingWindow(runtime.device, self.nonfinite)
        self.window.reset(self.iteration)
        metrics = None
        self._bar = bar
        with StopSignal() as stop, logging_redirect_tqdm([log]):  # also covers the final save
            while self.iteration < stop_at:
                images, masks = next(batches)
                loss = self.step(images, masks)
                self.iteration += 1
                self.window.add(loss, self.iteration, self._found_inf)
                bar.update(1)
                if self.iteration % tcfg.log_interval == 0 or self.iteration == stop_at:
                    self._end_log_window()
                if self.iteration % tcfg.val_interval == 0 or self.iteration == tcfg.max_iters:
                    metrics = self._validate_and_checkpoint()
                if self._should_stop(stop, stop_at):
                    break
            bar.close()
            if self.iteration < tcfg.max_iters:  # stopped early (signal or trainer.stop_after): keep the place
                if self.window.steps:
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
        if self.cfg.trainer.freeze_batchnorm:
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

    def _end_log_window(self) -> None:
        mean_loss, speed, skipped = self.window.close(self.iteration)
        if self.runtime.is_main:
            self.logger.log(self.iteration, mean_loss, speed, skipped, self.optimizer, self.criterion.extra_logs())

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


def refuse_existing_run(checkpoint_dir: Path) -> None:
    """A fresh run never overwrites one: refuse a run directory that already holds checkpoints."""
    existing = sorted(checkpoint_dir.glob("*.pt")) if checkpoint_dir.is_dir() else []
    if existing:
        raise RunRefused(
            f"{checkpoint_dir} already holds checkpoints ({', '.join(p.name for p in existing)}): recallseg never overwrites "
            "a run; continue it with resume=auto, or choose another hydra.run.dir"
        )


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
