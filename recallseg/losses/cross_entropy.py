"""Cross entropy, averaged over non-ignored pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recallseg.config.schema import Option
from recallseg.losses.fused.statistics import KERNEL, class_ce_statistics, not_with_triton, use_fused_kernel
from recallseg.losses.registry import SegmentationLoss


class CrossEntropyLoss(SegmentationLoss):
    """Plain pixel-wise cross entropy.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.
        kernel: ``"torch"``, ``"triton"`` or ``"auto"``, as for recall loss (``fused_statistics``);
            the fused kernel takes no label smoothing (``auto`` then runs PyTorch).

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar. A batch
    whose pixels are all ignored gives 0 with zero gradient (PyTorch itself gives NaN).
    """

    options = {"label_smoothing": Option(float, minimum=0, maximum=1, rule=not_with_triton(0, "does not implement label smoothing")), "kernel": KERNEL}

    def __init__(self, num_classes: int, ignore_index: int = 255, label_smoothing: float = 0.0, kernel: str = "torch"):
        super().__init__(num_classes, ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.kernel = kernel

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.label_smoothing and use_fused_kernel(self.kernel, logits):
            counts, nll_sums = class_ce_statistics(logits, target, self.num_classes, self.ignore_index)
            return nll_sums.sum() / counts[0].sum().clamp_min(1)
        # reduction="none" then sum: CUDA's summed 2-D NLL has no deterministic kernel.
        total = F.cross_entropy(
            logits.float(), target, ignore_index=self.ignore_index, reduction="none", label_smoothing=self.label_smoothing
        ).sum()
        return total / (target != self.ignore_index).sum().clamp_min(1)
