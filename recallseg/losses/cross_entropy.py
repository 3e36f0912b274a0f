"""Cross entropy, averaged over non-ignored pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import SegmentationLoss, register_loss


@register_loss("ce")
class CrossEntropyLoss(SegmentationLoss):
    """Plain pixel-wise cross entropy.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.

    Shape: logits ``(N, C, H, W)``, target ``(N, H, W)`` integer; returns a scalar. A batch
    whose pixels are all ignored gives 0 with zero gradient (PyTorch itself gives NaN).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, label_smoothing: float = 0.0):
        super().__init__(num_classes, ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # reduction="none" then sum: CUDA's summed 2-D NLL has no deterministic kernel.
        total = F.cross_entropy(
            logits.float(), target, ignore_index=self.ignore_index, reduction="none", label_smoothing=self.label_smoothing
        ).sum()
        return total / (target != self.ignore_index).sum().clamp_min(1)
