"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), per pixel."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from recallseg.config.schema import Option
from recallseg.losses.functional import masked_mean, safe_target, valid_mask
from recallseg.losses.registry import SegmentationLoss


class FocalLoss(SegmentationLoss):
    """Cross entropy scaled per pixel by ``(1 - p_t) ** gamma``, so easy pixels weigh less.

    ``loss = 1/N * sum_n alpha[y_n] * (1 - p_n(y_n)) ** gamma * (-log p_n(y_n))`` over the N
    non-ignored pixels. The focal factor is taken *per pixel* (the authors' code applied it to
    the batch-mean CE, which only rescales CE). ``gamma = 0`` without ``alpha`` is plain CE.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part (neither in the sum nor in N).
        gamma: focusing parameter, ``>= 0``.
        alpha: optional list of C per-class weights; ``None`` weighs every class 1. The mean
            still divides by the number of pixels, not by the sum of alphas.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar. A batch
    whose pixels are all ignored gives 0 with zero gradient.

    Reference: https://arxiv.org/abs/1708.02002
    """

    derived_buffers = ("alpha",)
    options = {"gamma": Option(float, minimum=0), "alpha": Option(list, item=float, minimum=0, per_class=True, null=True)}

    def __init__(self, num_classes: int, ignore_index: int = 255, gamma: float = 2.0, alpha: Sequence[float] | None = None):
        super().__init__(num_classes, ignore_index)
        self.gamma = float(gamma)
        if alpha is None:
            self.alpha = None
        else:
            self.register_buffer("alpha", torch.as_tensor(list(alpha), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = valid_mask(target, self.ignore_index)
        safe = safe_target(target, valid)
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        # 1 - p_t via expm1 keeps precision for confident pixels; the floor keeps the backward of
        # pow finite at p_t == 1 for gamma < 1 (an ignored pixel's NaN would survive the mask).
        miss = (-torch.expm1(log_pt)).clamp_min(torch.finfo(torch.float32).tiny)
        per_pixel = -log_pt if self.gamma == 0 else -(miss**self.gamma) * log_pt
        if self.alpha is not None:
            per_pixel = self.alpha[safe] * per_pixel
        return masked_mean(per_pixel, valid)
