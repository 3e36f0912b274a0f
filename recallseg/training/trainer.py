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
from omegaconf import DictConfig
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from recallseg.evaluation.inference import Inference, InferenceSettings
from recallseg.evaluation.loop import evaluate
from recallseg.evaluation.metrics import format_table, metrics_from_confusion
from recallseg.evaluation.report import write_metrics_json
from recallseg.evaluation.run_record import log_record
from recallseg.evaluation.samples import evaluation_loader, evaluation_samples
from recallseg.pipeline.loaders import close_loader, train_loader
from recallseg.runtime.device import Runtime, init_runtime, seed_everything, to_target
from recallseg.runtime.random_state import gather_rng_states, rank_seed, rng_state, rng_state_for_rank, set_rng_state
from recallseg.runtime.signals import Interruptible, StopAgreement, StopRequested, StopSignal
from recallseg.checkpoints.resume import Start
from recallseg.training.build import Trust, build_training, describe_parts, freeze_batchnorm
from recallseg.training.checkpointing import CheckpointPolicy
from recallseg.training.cuda_graph import GraphedStep
from recallseg.training.log import TrainingLogger, TrainingWindow, console_loggers, log_metrics, write_to_run_log
from recallseg.training.run_record import RunClock, log_end, training_record
from recallseg.training.run_end import RunEnd
from recallseg.training.tensorboard_images import ValidationPictures, trainer_predictor

log = logging.getLogger("recallseg")


class Trainer(CheckpointPolicy, RunEnd):
    """Builds every part from the (validated) config, then ``fit()`` runs the loop and returns the final metrics;
    however it ends early, it ends through ``RunEnd`` (training.run_end).

    ``start``: what the run starts from, when the caller chose it (``checkpoints.resume.resume_start``);
    by default ``choose_start`` chooses it from ``cfg.resume``. ``named_by_user``: for a config
    taken from a checkpoint (a resume), the targets the user named on the command line; every
    other target in it is built as stored data (``config.construct``, ``trusted=False``)."""

    def __init__(self, cfg: DictConfig, *, start: Start | None = None, named_by_user: frozenset[str] | None = None):
        self.cfg = cfg
        tcfg = cfg.trainer
        self.output_dir = Path(cfg.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.runtime: Runtime = init_runtime(tcfg.device, tcfg.amp, tcfg.channels_last, deterministic=tcfg.deterministic)
        seed_everything(cfg.seed)
        self.nonfinite = tcfg.nonfinite
        self._start = start
        trust = Trust.of(named_by_user)
        parts = build_training(cfg, self.runtime, trust)
        self.train_set, self.val_set = parts.train_set, parts.val_set
        self.network, self.model, self.criterion = parts.network, parts.model, parts.criterion
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
        self._saved_at = -1  # the iteration this run directory's last.pt holds (-1: none)
        self._started_at = 0  # the iteration this invocation started at
        self._validating = False  # a validation is under way (an end now leaves it pending)
        self._start_chosen = False  # choose_start has run (it restores a checkpoint once)
        self._resumed_state: dict[str, Any] | None = None  # the checkpoint the run continues from
        self._validation_rng: dict[str, Any] | None = None  # random states before the latest validation
        self.writer = None
        self.logger: TrainingLogger | None = None  # rank 0, once fit() starts
        self.window: TrainingWindow | None = None
        self._bar = None
        self.run_record: dict[str, Any] | None = None  # rank 0, once fit() starts: stored in every checkpoint
        self._clock = RunClock()
        # Validation scores exactly as evaluate.py does (evaluation.samples), with cfg.inference.
        self.validation_samples = evaluation_samples(cfg.dataset, self.val_set, cfg.evaluation.full_resolution, **trust.build)
        self.inference = Inference(InferenceSettings.from_config(cfg.inference))
        self.pictures = ValidationPictures(self.val_set, self.classes) if self.runtime.is_main else None  # TensorBoard images

    # -- validation: the evaluate.py protocol (evaluation.loop) --
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
        matrix = evaluate(self.model, loader, self.normalizer, self.runtime, self.num_classes, self.ignore_index, predict=self.inference)
        return metrics_from_confusion(matrix.compute(), self.classes)

    # -- the loop --
    def fit(self) -> dict:
        cfg, tcfg, runtime = self.cfg, self.cfg.trainer, self.runtime
        resumed = self.choose_start()
        self._clock = RunClock(self.iteration)
        self._started_at = self.iteration
        bar = tqdm(total=tcfg.max_iters, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True, disable=not runtime.is_main)
        if runtime.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # What an earlier invocation logged after the iteration this one starts from is redone: TensorBoard
            # hides it (purge_step). What it logged up to that iteration, which the checkpoint holds, stays.
            events = self.output_dir / "tensorboard"
            purge = self.iteration + 1 if any(events.glob("events.out.tfevents.*")) else None
            self.writer = SummaryWriter(str(events), purge_step=purge)
            self.logger = TrainingLogger(self.writer, self.classes, tcfg.max_iters, bar)
            log.info("run directory: %s", self.output_dir)
            log.info("parts: %s", describe_parts(cfg))
            log.info(
                "device %s, precision %s, channels_last %s, %d training / %d validation images, %d classes",
                runtime.device, runtime.amp_dtype or "float32", runtime.channels_last, len(self.train_set), len(self.val_set), self.num_classes,
            )
            self.run_record = training_record(cfg, runtime, self.train_set, self.val_set, resumed)
            log_record(self.run_record)
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
                    torch.manual_seed(rank_seed(cfg.seed, runtime.rank, self.iteration))
            self._train_mode()
            stop_at = tcfg.max_iters if tcfg.stop_after is None else min(tcfg.max_iters, self.iteration + tcfg.stop_after)
            self.window = TrainingWindow(runtime.device, self.nonfinite)
            self.window.reset(self.iteration)
            self._bar = bar
            agreement = StopAgreement(stop, runtime.distributed)
            failure = None
            try:
                metrics, abandoned = self._loop(batches, agreement, stop_at, bool(resumed and resumed.get("validation_pending")))
            except Exception as error:  # ends below, once the bar and the loader workers are gone
                failure = error
            finally:
                agreement.close()
                bar.close()
                close_loader(batches)
            if failure is not None:
                self._end_on_error(failure)
            if self.iteration < tcfg.max_iters or abandoned:  # stopped early (signal or trainer.stop_after): keep the place
                if runtime.is_main:
                    self._run_end()
                self._keep_place(stop, abandoned)
                return metrics or {}
        if metrics is None:  # resumed at max_iters: nothing left to train, still report
            metrics = self.validate()
        if runtime.is_main:
            table = format_table(metrics)
            print(table, flush=True)
            write_to_run_log(f"final metrics at iteration {self.iteration}:\n{table}", logging.INFO)
            run = {**self.run_record, "end": self._run_end()}
            write_metrics_json(self.output_dir / "metrics.json", metrics, iteration=self.iteration, checkpoint=str(self.checkpoint_dir / "last.pt"), run=run)
            self.writer.close()
        return metrics

    def _run_end(self) -> dict:
        """Time, speed and peak memory of this invocation, logged; the record's ``end``."""
        end = self._clock.end(self.iteration, self.cfg.trainer.batch_size * self.runtime.world_size, self.runtime)
        log_end(end)
        return end

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

    def _train_mode(self) -> None:
        self.network.train()
        if self.cfg.trainer.freeze_batchnorm:
            freeze_batchnorm(self.network)

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
            logits = self.network(x)
            loss = self.criterion(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.trainer.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.trainer.grad_clip)
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
        with self._clock.not_training():
            return self._validate_and_save(agreement)

    def _validate_and_save(self, agreement: StopAgreement | None) -> dict:
        self._validation_rng = rng_state()  # what a resume repeats an abandoned or failed validation from
        self._validating = True
        try:
            metrics = self.validate(agreement)
        finally:
            self._train_mode()
        self._validating = False
        rng_per_rank = gather_rng_states(rng_state(), self.runtime.distributed, self.runtime.world_size)
        if self.runtime.is_main:
            log_metrics(self.writer, metrics, self.iteration)
            self.pictures.log(self.writer, trainer_predictor(self.model, self.normalizer, self.runtime, self.inference), self.iteration, metrics)
            if self.logger is not None:  # fit() made it (a validation outside fit() draws no history)
                self.logger.log_heatmaps(self.iteration)
            log.info(
                "val @ %d: mIoU %.4f  mAcc %.4f  aAcc %.4f  mPrecision %.4f",
                self.iteration, metrics["mIoU"], metrics["mAcc"], metrics["aAcc"], metrics["mPrecision"],
            )
            score = metrics[self.monitor]
            if math.isfinite(score) and score > self.best_score:
                # best.pt first: were the run killed in between, last.pt would still hold the former best
                # score (never one that no best.pt holds), and the resume reads best.pt's (checkpoints.resume)
                previous, self.best_score = self.best_score, score
                try:
                    self._save("best.pt", rng_per_rank)
                except BaseException:  # last.pt must never record a score that no best.pt holds
                    self.best_score = previous
                    raise
                log.info("new best %s %.4f: saved best.pt", self.monitor, score)
            self._save("last.pt", rng_per_rank)
        return metrics

