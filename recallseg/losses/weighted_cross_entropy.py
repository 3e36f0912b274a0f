"""Cross entropy with fixed per-class weights (inverse, median-count, median-frequency or effective-number)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from recallseg.config.schema import Option, check_value
from recallseg.errors import ConfigError
from recallseg.losses.class_weights import RENAMED_MODES, WEIGHT_MODES, class_weights_from_counts
from recallseg.losses.fused.statistics import KERNEL, class_ce_statistics, use_fused_kernel
from recallseg.losses.registry import LossContext, SegmentationLoss

log = logging.getLogger(__name__)

# Shared with class-balanced cross entropy.
BETA = Option(float, minimum=0, below=1, also=("auto",))
NORMALIZE = Option(str, choices=("weights", "pixels"))
# A class with no training pixels may weigh 0; a negative weight would reward its mistakes.
WEIGHTS = Option(list, item=float, minimum=0, per_class=True, null=True)


def read_weights_file(path: str | Path) -> list[float]:
    """Read class weights from a JSON list, a JSON object with a ``weights`` list, or a text file of numbers."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("loss.weights_file", f"{path} does not exist", "pass loss.weights=[...] or fix loss.weights_file")
    text = path.read_text()
    try:
        data = json.loads(text)
        values = data["weights"] if isinstance(data, dict) else data
    except json.JSONDecodeError:
        values = text.replace(",", " ").split()
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as error:
        raise ConfigError("loss.weights_file", f"{path} must hold a list of numbers ({error})", "write a JSON list or one number per line") from None


def _rounded(weights: Any) -> list[float]:
    return [round(float(w), 4) for w in weights]


class WeightedCrossEntropyLoss(SegmentationLoss):
    """Pixel-wise cross entropy with fixed class weights.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part.
        weights: the C class weights.

    The mean is PyTorch's weighted mean, ``sum_n w[y_n] CE_n / sum_n w[y_n]`` over non-ignored
    pixels, as ``torch.nn.CrossEntropyLoss(weight=w)`` computes it; set ``normalize: pixels``
    to divide by the number of non-ignored pixels instead. From YAML the weights come from
    ``weights`` (a list), ``weights_file``, or, by default, from the training split's
    statistics with ``mode`` = inverse | median_count | median_frequency | effective_number (and
    ``beta``); see ``class_weights.class_weights_from_counts``. ``median_count`` is
    ``median(n) / n_c`` (the paper's code; inverse frequency up to a constant), ``median_frequency``
    Eigen & Fergus's rule over the images in which each class appears.
    ``kernel`` is ``"torch"``, ``"triton"`` or ``"auto"``, as for recall loss (``fused_statistics``).
    """

    derived_buffers = ("weights",)
    options = {
        "mode": Option(str, choices=(*WEIGHT_MODES, *RENAMED_MODES)),
        "beta": BETA,
        "weights": WEIGHTS,
        "weights_file": Option(str, null=True),
        "normalize": NORMALIZE,
        "kernel": KERNEL,
    }

    def __init__(
        self,
        num_classes: int,
        weights: Sequence[float] | torch.Tensor,
        ignore_index: int = 255,
        normalize: str = "weights",
        kernel: str = "torch",
    ):
        super().__init__(num_classes, ignore_index)
        self.normalize = normalize
        self.kernel = kernel
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).flatten())

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: LossContext) -> "WeightedCrossEntropyLoss":
        options = dict(options)
        mode = options.pop("mode", "median_count")
        beta = options.pop("beta", "auto")
        weights = options.pop("weights", None)
        weights_file = options.pop("weights_file", None)
        if weights is None and weights_file:
            weights = read_weights_file(weights_file)
            # The file stands for loss.weights: its numbers are held to the same Option.
            check_value("loss.weights_file", weights, replace(WEIGHTS, length=context.num_classes, null=False))
        if weights is None:
            if context.class_pixel_counts is None:
                raise ConfigError("loss", "weighted_ce needs class weights", "give loss.weights, loss.weights_file, or train on a dataset")
            if mode in RENAMED_MODES:
                log.warning("loss.mode=%s is now called %s (median(n) / n_c); use that name", mode, RENAMED_MODES[mode])
            image_pixels = None
            if mode == "median_frequency":
                if context.class_statistics is None:
                    raise ConfigError("loss.mode", "median_frequency needs the training split's class statistics", "train on a dataset")
                image_pixels = context.class_statistics().image_pixels
            weights = class_weights_from_counts(context.class_pixel_counts(), mode=mode, beta=beta, image_pixels=image_pixels)
            log.info("%s class weights from the training split's statistics (mode %s): %s", cls.__name__, mode, _rounded(weights))
        return cls(num_classes=context.num_classes, ignore_index=context.ignore_index, weights=list(map(float, weights)), **options)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if use_fused_kernel(self.kernel, logits):
            counts, nll_sums = class_ce_statistics(logits, target, self.num_classes, self.ignore_index)
            denominator = counts[0].sum().clamp_min(1) if self.normalize == "pixels" else (self.weights * counts[0]).sum().clamp_min(1e-12)
            return (self.weights * nll_sums).sum() / denominator
        # reduction="none" then sum: CUDA's summed 2-D NLL has no deterministic kernel.
        total = F.cross_entropy(logits.float(), target, weight=self.weights, ignore_index=self.ignore_index, reduction="none").sum()
        if self.normalize == "pixels":
            denominator = (target != self.ignore_index).sum().clamp_min(1).to(total.dtype)
        else:
            valid = target != self.ignore_index
            safe = torch.where(valid, target, torch.zeros_like(target))
            denominator = (self.weights[safe] * valid).sum().clamp_min(1e-12)
        return total / denominator

    def extra_logs(self) -> dict[str, torch.Tensor]:
        return {}
