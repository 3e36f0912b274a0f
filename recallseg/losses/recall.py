"""Recall loss (Tian et al., "Striking the Right Balance: Recall Loss for Semantic
Segmentation", ICRA 2022, arXiv 2106.14917)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recallseg.config.schema import Option
from recallseg.losses.functional import class_sums, class_totals_and_flagged, target_is_top1_from_log_probs
from recallseg.losses.fused.statistics import KERNEL, class_ce_statistics, use_fused_kernel
from recallseg.losses.registry import SegmentationLoss


class RecallLoss(SegmentationLoss):
    """Cross entropy weighted per class by the class's current miss rate, ``w_c = 1 - recall_c``.

    ``recall_c = TP_c / N_c`` over the non-ignored pixels of class c, so ``w_c = FN_c / N_c``:
    classes the model currently gets wrong weigh more, whether they are rare or not. The
    loss is ``sum_n w[y_n] * CE_n / N`` over the N non-ignored pixels. The weights carry no
    gradient. A class absent from the statistics gets weight 0 (it has no pixels to weigh).

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part (not in N_c, FN_c nor N).
        statistics: ``"batch"`` (the paper: counts of the current batch) or ``"ema"``
            (counts smoothed over iterations; the state is saved in checkpoints).
        momentum: for ``"ema"``, the weight of the past: ``s <- m * s + (1 - m) * batch``.
        soft: take recall from predicted probabilities, ``recall_c = sum_{n in c} p_n(c) / N_c``,
            instead of hard hits.
        sync: all-reduce the per-class counts over DDP ranks so the weights come from the
            global batch; a no-op without an initialised process group.
        kernel: ``"torch"`` (PyTorch ops, any device), ``"triton"`` (one fused pass over the
            logits for NLL, hits and counts, and one for the gradient; CUDA tensors, see
            ``fused_statistics``) or ``"auto"`` (Triton on CUDA when it is installed, else PyTorch).
            Both give the same loss and gradient up to float32 rounding.

    A pixel is a hit when the target's logit is the largest (ties count as hits; see
    ``functional.target_is_top1``). The test runs on the log-probabilities the loss already
    has (``functional.target_is_top1_from_log_probs``), which ranks classes the same way.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar.
    """

    options = {
        "statistics": Option(str, choices=("batch", "ema")),
        # At 1 the statistics would never leave the first batch's counts.
        "momentum": Option(float, minimum=0, below=1),
        "soft": Option(bool),
        "sync": Option(bool),
        "kernel": KERNEL,
    }

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        statistics: str = "batch",
        momentum: float = 0.9,
        soft: bool = False,
        sync: bool = False,
        kernel: str = "torch",
    ):
        super().__init__(num_classes, ignore_index)
        self.statistics = statistics
        self.momentum = float(momentum)
        self.soft = bool(soft)
        self.sync = bool(sync)
        self.kernel = kernel
        # EMA of [N_c, FN_c]; `seen` turns the first update into a plain copy without a host branch.
        self.register_buffer("ema_counts", torch.zeros(2, num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self._last_weights: torch.Tensor | None = None
        self._last_batch_recall: torch.Tensor | None = None

    @torch.no_grad()
    def _counts(self, log_probs: torch.Tensor, labels: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        """Stacked ``[N_c, FN_c]`` of this batch (float32, shape 2 x C); ``labels`` are C where ignored."""
        if self.soft:
            totals = class_sums(labels, None, self.num_classes)
            misses = class_sums(labels, -torch.expm1(-nll), self.num_classes)  # 1 - p_n(y_n)
        else:
            hit = target_is_top1_from_log_probs(log_probs, nll)
            totals, hits = class_totals_and_flagged(labels, hit, self.num_classes)
            misses = totals - hits
        return torch.stack([totals, misses])

    def _weights(self, counts: torch.Tensor) -> torch.Tensor:
        """``w_c = FN_c / N_c`` from this batch's ``[N_c, FN_c]``, after DDP sync and EMA as configured."""
        batch_recall = 1.0 - counts[1] / counts[0].clamp_min(1)
        if self.sync and dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        if self.statistics == "ema" and self.training:
            with torch.no_grad():
                blended = self.momentum * self.ema_counts + (1.0 - self.momentum) * counts
                self.ema_counts.copy_(torch.where(self.seen, blended, counts))
                self.seen.fill_(True)
            counts = self.ema_counts
        elif self.statistics == "ema":
            counts = torch.where(self.seen, self.ema_counts, counts)
        weights = counts[1] / counts[0].clamp_min(1e-12)
        weights = torch.where(counts[0] > 0, weights, torch.zeros_like(weights))
        self._last_weights, self._last_batch_recall = weights.detach(), batch_recall.detach()
        return weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if use_fused_kernel(self.kernel, logits):
            # sum_n w[y_n] * nll_n == sum_c w_c * S_c: the loss needs only per-class sums.
            stats, nll_sums = class_ce_statistics(logits, target, self.num_classes, self.ignore_index)
            weights = self._weights(torch.stack([stats[0], stats[2] if self.soft else stats[1]]))
            return (weights * nll_sums).sum() / stats[0].sum().clamp_min(1)
        # Label C marks ignored pixels: they fall out of the counts and index a zero weight.
        labels = torch.where(target != self.ignore_index, target, self.num_classes)
        # log_softmax + nll_loss is what cross_entropy runs; keeping log_probs lets the hit test
        # reuse -nll as the target's log-probability instead of gathering from the logits.
        log_probs = F.log_softmax(logits.float(), dim=1)
        nll = F.nll_loss(log_probs, target, ignore_index=self.ignore_index, reduction="none")
        counts = self._counts(log_probs.detach(), labels, nll.detach())
        num_valid = counts[0].sum()  # before _weights, whose DDP sync sums counts over ranks in place
        weights = F.pad(self._weights(counts), (0, 1))
        # index_select is ~3x cheaper than advanced indexing (weights[labels]) on CPU.
        per_pixel = weights.index_select(0, labels.reshape(-1)).view_as(nll) * nll
        return per_pixel.sum() / num_valid.clamp_min(1)

    def extra_logs(self) -> dict[str, torch.Tensor]:
        if self._last_weights is None:
            return {}
        return {"recall_weight": self._last_weights, "batch_recall": self._last_batch_recall}
