"""The iteration-based training loop.

One code path for CPU and CUDA: autocast for mixed precision (bf16 by default on CUDA,
fp16 with a GradScaler, off on CPU), channels-last on CUDA, uint8 batches normalised on
the device. The step itself never synchronises with the host: the loss is accumulated as
a tensor and read only at log intervals.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from recallseg.pipeline.loaders import close_loader, train_loader
from recallseg.evaluation.metrics import format_table, metrics_from_confusion
from recallseg.atomic_files import remove_orphaned_temporaries
from recallseg.training.run_directory import check_writable
from recallseg.checkpoints.format import first_nonfinite, load_checkpoint, require_finite_weights, save_checkpoint
from recallseg.checkpoints.contents import for_inference, require_training_state
from recallseg.training.cuda_graph import GraphedStep
from recallseg.evaluation.loop import evaluate
from recallseg.evaluation.samples import evaluation_loader, evaluation_samples
from recallseg.evaluation.inference import Inference, InferenceSettings
from recallseg.evaluation.reporting import log_metrics, write_metrics_json
from recallseg.runtime.random_state import gather_rng_states, rng_state, rng_state_for_rank, set_rng_state
from recallseg.checkpoints.resume_changes import apply_optimizer_options, check_resumable
from recallseg.checkpoints.resume import RunRefused, newest_resumable, reconciled_best_score, refuse_existing_run  # noqa: F401 (RunRefused: re-exported)
from recallseg.runtime.device import Runtime, init_runtime, seed_everything, to_target
from recallseg.training.build import build_training, describe_parts
from recallseg.training.tensorboard_images import ValidationPictures, trainer_predictor
from recallseg.runtime.signals import Interruptible, Interrupted, StopAgreement, StopRequested, StopSignal
from recallseg.training.log import TrainingLogger, TrainingWindow, console_loggers

log = logging.getLogger("recallseg")


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
        self._saved_at = -1  # the iteration last.pt holds
        self._start: tuple[dict[str, Any] | None] | None = None  # (the resumed checkpoint's state,) once chosen
        self.writer = None
        # Validation scores exactly as evaluate.py does (engine.evaluation_data), with cfg.inference.
        self.validation_samples = evaluation_samples(cfg.dataset, self.val_set, cfg.evaluation.full_resolution)
        self.inference = Inference(InferenceSettings.from_config(cfg.inference))
        self.pictures = ValidationPictures(self.val_set, self.classes) if self.runtime.is_main else None  # TensorBoard images

    # -- checkpoints --
    def state_dict(self, rng_per_rank: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
        """Everything a resume needs; ``rng_per_rank`` (from ``gather_rng_states``) is every rank's random state."""
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
            "rng": rng_per_rank[0] if rng_per_rank else rng_state(),
            **extra,
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

    def choose_start(self) -> dict[str, Any] | None:
        """Choose what the run continues from (refusing, with nothing changed, what it cannot use),
        restore it, and check the run directory can be written. Called before anything is written."""
        if self._start is None:
            self._start = (self._resume_state(),)
            if self.runtime.is_main:
                check_writable(self.checkpoint_dir)
                remove_orphaned_temporaries(self.output_dir, self.checkpoint_dir)
        return self._start[0]

    def _resume_state(self) -> dict[str, Any] | None:
        """The checkpoint to continue from, or None for a fresh run (which must not clobber one)."""
        resume = self.cfg.resume
        if resume is None:
            refuse_existing_run(self.checkpoint_dir)
            return None
        if resume == "auto":
            found = newest_resumable(self.checkpoint_dir)
            if found is None:
                log.info("resume=auto: no checkpoint in %s, starting from scratch", self.checkpoint_dir)
                return None
            path, state = found
        else:  # on the CPU: random states must be CPU tensors; load_state_dict moves the rest to the device
            path, state = Path(resume), load_checkpoint(resume, map_location="cpu")
        require_finite_weights(state, path)
        require_training_state(state, path)  # best.pt holds the model only
        new = OmegaConf.to_container(self.cfg, resolve=True)
        changes = check_resumable(path, state.get("config", {}), new, state.get("classes", self.classes), self.classes)
        self.load_state_dict(state)
        self.best_score = reconciled_best_score(self.checkpoint_dir, state, path)
        changed = {key.split(".", 1)[1] for key in changes if key.startswith("optimizer.")}
        apply_optimizer_options(self.optimizer, self.scheduler, {k: v for k, v in new["optimizer"].items() if k in changed})
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return state

    def _save(self, name: str, rng_per_rank: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
        """Write a checkpoint; refuses weights or statistics that are not finite (a NaN never reaches disk)."""
        key = first_nonfinite(self.module.state_dict())
        if key is not None:
            raise FloatingPointError(
                f"model tensor {key!r} is not finite at iteration {self.iteration}; not saving {name}. "
                "Lower optimizer.lr, set trainer.grad_clip, or check the data."
            )
        path = self.checkpoint_dir / name
        state = self.state_dict(rng_per_rank, **extra)
        save_checkpoint(for_inference(state) if name == "best.pt" else state, path)  # best.pt: no optimizer state
        if name == "last.pt":
            self._saved_at = self.iteration
        return path

    # -- validation: the evaluate.py protocol (engine.evaluation) --
    def validate(self, agreement: StopAgreement | None = None) -> dict:
        """Score the validation split; with ``agreement``, a stop abandons it (``StopRequested``) at the same batch on every rank."""
        cfg, world_size = self.cfg, self.runtime.world_size
        batch_size = cfg.evaluation.batch_size or cfg.trainer.batch_size
        loader = evaluation_loader(
            self.validation_samples, batch_size, cfg.evaluation.num_workers, self.runtime.rank, world_size,
            pin_memory=self.runtime.device.type == "cuda",
        )  # fmt: skip
        if agreement is not None:  # as many polls on every rank as the largest shard (rank 0's) has batches
            loader = Interruptible(loader, agreement, polls=math.ceil(math.ceil(len(self.validation_samples) / world_size) / batch_size))
        matrix = evaluate(self.module, loader, self.normalizer, self.runtime, self.num_classes, self.ignore_index, predict=self.inference)
        return metrics_from_confusion(matrix.compute(), self.classes)

    # -- the loop --
    def fit(self) -> dict:
        cfg, tcfg, runtime = self.cfg, self.cfg.trainer, self.runtime
        resumed = self.choose_start()
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
        # The handler is in place before loader workers fork: until their worker_init ignores the signals, they inherit it.
        with StopSignal() as stop, logging_redirect_tqdm(console_loggers()):
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
            self._bar = bar
            agreement = StopAgreement(stop, runtime.distributed)
            try:
                metrics, abandoned = self._loop(batches, agreement, stop_at, bool(resumed and resumed.get("validation_pending")))
            finally:
                agreement.close()
                bar.close()
                close_loader(batches)
            if self.iteration < tcfg.max_iters or abandoned:  # stopped early (signal or trainer.stop_after): keep the place
                self._keep_place(stop, abandoned)
                return metrics or {}
        if metrics is None:  # resumed at max_iters: nothing left to train, still report
            metrics = self.validate()
        if runtime.is_main:
            print(format_table(metrics), flush=True)
            write_metrics_json(self.output_dir / "metrics.json", metrics, iteration=self.iteration, checkpoint=str(self.checkpoint_dir / "last.pt"))
            self.writer.close()
        return metrics

    def _loop(self, batches, agreement: StopAgreement, stop_at: int, validate_first: bool) -> tuple[dict | None, bool]:
        """Train until ``stop_at`` or an agreed stop: ``(the last metrics, whether a validation was abandoned)``."""
        tcfg, metrics = self.cfg.trainer, None
        try:
            if validate_first:  # the checkpoint was saved when a stop abandoned this validation
                metrics = self._validate_and_checkpoint(agreement)
            while self.iteration < stop_at:
                images, masks = next(batches)
                loss = self.step(images, masks)
                self.iteration += 1
                self.window.add(loss, self.iteration, self._found_inf)
                self._bar.update(1)
                if self.iteration % tcfg.log_interval == 0 or self.iteration == stop_at:
                    self._end_log_window()
                if self.iteration % tcfg.val_interval == 0 or self.iteration == tcfg.max_iters:
                    metrics = self._validate_and_checkpoint(agreement)
                if agreement.poll():
                    break
        except StopRequested:
            return metrics, True
        return metrics, False

    def _keep_place(self, stop: StopSignal, abandoned_validation: bool) -> None:
        """After an early stop: save last.pt (unless it holds this iteration already) on rank 0 while the
        other ranks wait, then exit with the signal's status if a signal caused the stop. A checkpoint
        saved during a validation holds the random states from before it, and the resumed run repeats it."""
        runtime = self.runtime
        if self.window.steps:
            self._end_log_window()
        state = self._validation_rng if abandoned_validation else rng_state()
        rng_per_rank = gather_rng_states(state, runtime.distributed, runtime.world_size)
        if runtime.is_main:
            if abandoned_validation or self._saved_at != self.iteration:
                self._save("last.pt", rng_per_rank, validation_pending=abandoned_validation)
            self.writer.close()
            log.info("stopped at iteration %d; continue with resume=auto (same hydra.run.dir)", self.iteration)
        if runtime.distributed:  # no rank exits (and makes torchrun kill the others) before last.pt is written
            torch.distributed.barrier()
        if stop.received is not None:
            raise Interrupted(stop.exit_code)

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.trainer.freeze_batchnorm:
            freeze_batchnorm(self.model)

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

    def _validate_and_checkpoint(self, agreement: StopAgreement | None = None) -> dict:
        self._validation_rng = rng_state()  # what a resume repeats an abandoned validation from
        try:
            metrics = self.validate(agreement)
        finally:
            self._train_mode()
        rng_per_rank = gather_rng_states(rng_state(), self.runtime.distributed, self.runtime.world_size)
        if self.runtime.is_main:
            log_metrics(self.writer, metrics, self.iteration)
            self.pictures.log(self.writer, trainer_predictor(self.module, self.normalizer, self.runtime, self.inference), self.iteration, metrics)
            log.info(
                "val @ %d: mIoU %.4f  mAcc %.4f  aAcc %.4f  mPrecision %.4f",
                self.iteration, metrics["mIoU"], metrics["mAcc"], metrics["aAcc"], metrics["mPrecision"],
            )
            score = metrics[self.monitor]
            if math.isfinite(score) and score > self.best_score:
                # best.pt first: were the run killed in between, last.pt would still hold the former best
                # score (never one that no best.pt holds), and the resume reads best.pt's (resume_choice)
                self.best_score = score
                self._save("best.pt", rng_per_rank)
                log.info("new best %s %.4f: saved best.pt", self.monitor, score)
            self._save("last.pt", rng_per_rank)
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
