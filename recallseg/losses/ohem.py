"""Online hard example mining over pixels (Shrivastava et al., CVPR 2016; the pixel form of
Wu et al., "High-performance Semantic Segmentation Using Very Deep Fully Convolutional Networks")."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from recallseg.config.schema import Option, Refusal
from recallseg.losses.functional import valid_mask
from recallseg.losses.registry import SegmentationLoss


def _whole(key: str, count: float, section: Mapping[str, Any]) -> Refusal | None:
    # A count written as 1e5 on the command line arrives as a float; it is still a count.
    return None if count == int(count) else (f"got {count!r}; it must be a whole number", f"set e.g. {key}={int(count)}")


class OhemCrossEntropyLoss(SegmentationLoss):
    """Cross entropy averaged over the hard pixels of the batch only.

    A non-ignored pixel is kept when its target probability is below ``thresh``
    (``CE_n > -log(thresh)``) or when it is among the ``min_kept`` hardest non-ignored pixels
    of the whole batch (``CE_n >=`` the ``min_kept``-th largest CE), so at least ``min_kept``
    pixels are kept whenever the batch has that many. The loss is the mean CE over kept pixels.
    In loss terms the cut is ``CE_n >= min(-log(thresh), kth hardest CE)`` (the ``min``: taking the
    ``max`` would keep at most ``min_kept`` pixels); in probability terms it is the usual
    ``p < thresh or p <= p_(min_kept)``. The hardest pixels are ranked over all pixels of the
    batch, flattened (the authors' code ranked along the wrong dimension).

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part (never kept, not counted).
        thresh: probability threshold in ``(0, 1]``.
        min_kept: how many of the hardest pixels per batch are always kept (0 disables).

    The selection is made without host-device synchronisation: ignored pixels are pushed to
    ``-inf`` and the ``min_kept``-th largest CE comes from one ``topk`` on the device.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar. A batch
    whose pixels are all ignored gives 0 with zero gradient.

    Reference: https://arxiv.org/abs/1604.03540, https://arxiv.org/abs/1604.04339
    """

    options = {"thresh": Option(float, above=0, maximum=1), "min_kept": Option(float, minimum=0, rule=_whole)}

    def __init__(self, num_classes: int, ignore_index: int = 255, thresh: float = 0.7, min_kept: int = 100000):
        super().__init__(num_classes, ignore_index)
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = valid_mask(target, self.ignore_index)
        nll = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        with torch.no_grad():
            ranked = torch.where(valid, nll, torch.full_like(nll, -math.inf)).reshape(-1)
            kept = nll > -math.log(self.thresh)
            k = min(self.min_kept, ranked.numel())  # shapes are static: no sync
            if k > 0:
                kth_hardest = ranked.topk(k, sorted=False).values.min()
                kept = kept | (nll >= kth_hardest)  # -inf when fewer than k valid pixels: keep all
            kept = kept & valid
        return (nll * kept).sum() / kept.sum().clamp_min(1)
