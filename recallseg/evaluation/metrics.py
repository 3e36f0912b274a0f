"""Segmentation metrics from one confusion matrix accumulated on the device."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of ground-truth class t predicted as p; pixels whose target is
    ``ignore_index`` are not counted.

    ``update`` is free of host synchronisation (one ``index_add_`` into C*C+3 bins), so evaluation
    never stalls the GPU per batch. Besides the C*C cells, one bin collects the ignored pixels
    and two count what no cell can hold: targets that are neither a class id nor the ignore
    index, and predictions outside ``0..C-1`` at pixels that are scored. Those would otherwise
    spill into a neighbouring cell (a prediction of C into the next row's class 0); ``compute``,
    which reads the counts back once, raises a ``ValueError`` if either is not zero.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {self.ignore_index} is also a class id (0..{self.num_classes - 1}): that class could never be scored")
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)
        self._bins = torch.zeros(self.num_classes**2 + 3, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth class maps (same shape, integer)."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        C = self.num_classes
        target = target.to(self._bins.device).long()
        prediction = prediction.to(self._bins.device).long()
        ignored = target == self.ignore_index
        known = (target >= 0) & (target < C)
        predicted = (prediction >= 0) & (prediction < C)
        index = torch.where(known & predicted, target * C + prediction, C * C + 2)  # the last: a prediction outside 0..C-1
        index = torch.where(known, index, C * C + 1)  # a target neither a class nor ignored
        index = torch.where(ignored, C * C, index)
        self._bins.index_add_(0, index.reshape(-1), torch.ones(1, dtype=torch.int64, device=index.device).expand(index.numel()))

    def compute(self) -> torch.Tensor:
        """The C x C matrix so far (folds pending counts into ``matrix``); raises if a target or a
        prediction outside the classes was added (see the class docstring)."""
        C = self.num_classes
        self.matrix += self._bins[: C * C].view(C, C)
        bad_targets, bad_predictions = self._bins[C * C + 1 :].tolist()
        self._bins.zero_()
        if bad_targets or bad_predictions:
            raise ValueError(
                f"ConfusionMatrix: {bad_targets} target pixel(s) neither a class id (0..{C - 1}) nor the ignore index "
                f"{self.ignore_index}, and {bad_predictions} scored pixel(s) predicted outside 0..{C - 1}; such pixels are not counted"
            )
        return self.matrix

    def all_reduce(self) -> None:
        """Sum the matrix over DDP ranks (no-op without a process group)."""
        self.compute()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def metrics_from_confusion(matrix: torch.Tensor, class_names: Sequence[str]) -> dict:
    """mIoU, mAcc (mean per-class recall), aAcc, mPrecision and per-class values, as fractions.

    A class absent from both ground truth and prediction has NaN IoU, accuracy and precision
    and is left out of the means. A class with pixels but never predicted has precision NaN
    (0/0) and is left out of mPrecision; one predicted but absent from the ground truth has
    IoU 0 and accuracy NaN.
    """
    m = matrix.detach().to("cpu", torch.float64)
    if m.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix has {m.shape[0]} classes but {len(class_names)} names were given")
    tp = m.diag()
    gt = m.sum(1)
    pred = m.sum(0)
    union = gt + pred - tp

    def ratio(num: torch.Tensor, den: torch.Tensor) -> list[float]:
        return [float(n / d) if d > 0 else float("nan") for n, d in zip(num.tolist(), den.tolist())]

    iou, acc, precision = ratio(tp, union), ratio(tp, gt), ratio(tp, pred)
    total = m.sum().item()
    per_class = {
        name: {"iou": iou[c], "acc": acc[c], "precision": precision[c], "pixels": int(gt[c].item())}
        for c, name in enumerate(class_names)
    }
    return {
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "aAcc": float(tp.sum().item() / total) if total > 0 else float("nan"),
        "mPrecision": _nanmean(precision),
        "per_class": per_class,
    }


def format_table(metrics: dict) -> str:
    """A per-class table in percent plus the means, for terminals and logs."""
    names = list(metrics["per_class"])
    width = max([len(n) for n in names] + [5])

    def pct(value: float) -> str:
        return "    n/a" if math.isnan(value) else f"{100 * value:7.2f}"

    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}  {'Prec':>7}  {'pixels':>12}"]
    for name in names:
        row = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {pct(row['iou'])}  {pct(row['acc'])}  {pct(row['precision'])}  {row['pixels']:>12,}")
    lines.append("-" * len(lines[0]))
    lines.append(
        f"mIoU {pct(metrics['mIoU']).strip()}  mAcc {pct(metrics['mAcc']).strip()}  "
        f"aAcc {pct(metrics['aAcc']).strip()}  mPrecision {pct(metrics['mPrecision']).strip()}  (percent)"
    )
    if any(math.isnan(v["iou"]) for v in metrics["per_class"].values()):
        lines.append("n/a: class absent from both ground truth and prediction (or never predicted, for Prec); left out of the means")
    return "\n".join(lines)
