"""The training loss window and what is logged from it.

The step never synchronises with the host: each step's loss (and whether it was finite) is
added to device tensors, which are read once per ``trainer.log_interval`` steps. There the
non-finite policy is applied and the window is logged: the log line, the progress bar and
TensorBoard, including every per-class value the loss reports (``extra_logs``), as scalars and,
at each validation, as a class x iteration heatmap, the same way for any loss.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from recallseg.training.optim import current_lr
from recallseg.training.tensorboard_images import per_class_heatmap
from recallseg.errors import NonFiniteError

log = logging.getLogger("recallseg")


def log_metrics(writer, metrics: dict, step: int, prefix: str = "val") -> None:
    """Means and per-class IoU, accuracy and precision as TensorBoard scalars."""
    for key in ("mIoU", "mAcc", "aAcc", "mPrecision"):
        if not math.isnan(metrics[key]):
            writer.add_scalar(f"{prefix}/{key}", metrics[key], step)
    for name, row in metrics["per_class"].items():
        for key, tag in (("iou", "IoU"), ("acc", "Acc"), ("precision", "Precision")):
            if not math.isnan(row[key]):
                writer.add_scalar(f"{prefix}/{tag}/{name}", row[key], step)


class PerClassHistory:
    """Per-class values over iterations (e.g. recall weights), drawn as a class x iteration heatmap."""

    def __init__(self, class_names: Sequence[str], max_columns: int = 512):
        self.class_names = list(class_names)
        self.columns: list[np.ndarray] = []
        self.iterations: list[int] = []
        self.max_columns = max_columns

    def append(self, values: torch.Tensor, iteration: int) -> None:
        self.columns.append(values.detach().float().cpu().numpy())
        self.iterations.append(iteration)
        if len(self.columns) > self.max_columns:  # keep the picture bounded: drop every other old column
            self.columns, self.iterations = self.columns[::2], self.iterations[::2]

    def image(self, title: str) -> np.ndarray:
        """HWC uint8 heatmap, a named row per class, a column per logged iteration, viridis colours for [0, 1]."""
        values = np.clip(np.nan_to_num(np.stack(self.columns, axis=1), nan=0.0), 0.0, 1.0)
        return per_class_heatmap(values, self.class_names, self.iterations, title)


class TrainingWindow:
    """Loss, non-finite steps and speed over the steps since the last log."""

    def __init__(self, device: torch.device, nonfinite: str):
        self.device, self.nonfinite = device, nonfinite
        self.reset(0)

    def reset(self, iteration: int) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.bad = torch.zeros((), dtype=torch.int64, device=self.device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.steps = 0
        self.start = (time.perf_counter(), iteration)

    def add(self, loss: torch.Tensor, iteration: int, skipped: torch.Tensor | None = None) -> None:
        """Account the step that made ``iteration`` (device tensors only: no host sync)."""
        loss = loss.detach()
        self.loss += torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
        bad = ~torch.isfinite(loss)
        if skipped is not None:  # nonfinite=skip: steps the GradScaler skipped for inf gradients
            bad = bad | (skipped > 0)
        self.bad += bad
        self.first_bad = torch.where(bad & (self.first_bad < 0), iteration, self.first_bad)
        self.steps += 1

    def close(self, iteration: int) -> tuple[float, float, int]:
        """Read the window (the loop's only host sync), apply the non-finite policy; ``(mean loss, it/s, skipped)``."""
        bad, first_bad = int(self.bad), int(self.first_bad)
        good = self.steps - bad
        mean_loss = float(self.loss) / good if good else float("nan")
        elapsed, start_iteration = time.perf_counter() - self.start[0], self.start[1]
        speed = (iteration - start_iteration) / max(elapsed, 1e-9)
        self.reset(iteration)
        if bad:
            where = f"{bad} of iterations {start_iteration + 1}..{iteration} (first: {first_bad})"
            if self.nonfinite == "stop":
                raise NonFiniteError(
                    f"non-finite training loss at {where}. Lower optimizer.lr, set trainer.grad_clip, check the data, "
                    "or set trainer.nonfinite=skip to skip such steps."
                )
            log.warning("skipped %s: non-finite loss or gradients, no update applied", where)
        return mean_loss, speed, bad


class TrainingLogger:
    """Writes a closed window to the log, the progress bar and TensorBoard (rank 0 only)."""

    def __init__(self, writer: Any, classes: list[str], max_iters: int, bar: Any):
        self.writer, self.classes, self.max_iters, self.bar = writer, list(classes), max_iters, bar
        self.histories: dict[str, PerClassHistory] = {}

    def log(self, iteration: int, mean_loss: float, speed: float, skipped: int, optimizer, per_class: dict[str, torch.Tensor]) -> None:
        lr = current_lr(optimizer)
        if math.isfinite(mean_loss):
            self.writer.add_scalar("train/loss", mean_loss, iteration)
        self.writer.add_scalar("train/skipped_steps", skipped, iteration)
        self.writer.add_scalar("train/lr", lr, iteration)
        self.writer.add_scalar("train/iterations_per_second", speed, iteration)
        for name, values in per_class.items():
            values = values.detach().float().cpu()
            for class_name, value in zip(self.classes, values.tolist()):
                self.writer.add_scalar(f"train/{name}/{class_name}", value, iteration)
            self.histories.setdefault(name, PerClassHistory(self.classes)).append(values, iteration)
        log.info("iter %d/%d  loss %.4f  lr %.3e  %.2f it/s", iteration, self.max_iters, mean_loss, lr, speed)
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")


    def log_heatmaps(self, iteration: int) -> None:
        """Each per-class history as a heatmap image; drawn at validations (a figure takes ~0.1 s), not every log line."""
        for name, history in self.histories.items():
            image = history.image(f"{name} per class, up to iteration {iteration}")
            self.writer.add_image(f"train/{name}_heatmap", image, iteration, dataformats="HWC")


def console_loggers() -> list[logging.Logger]:
    """The loggers whose console handlers ``logging_redirect_tqdm`` must route through ``tqdm.write``,
    so that no log line lands on the progress bar's line: the root logger (where Hydra puts the
    console handler) and ``recallseg`` when it has handlers of its own."""
    return [logging.getLogger()] + ([log] if log.handlers else [])


def write_to_run_log(text: str, level: int = logging.ERROR) -> None:
    """Write ``text`` to the run's log file(s) only (train.log), not again to the console."""
    record = logging.LogRecord("recallseg", level, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers + logging.getLogger("recallseg").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
