"""Recall loss (Tian et al., "Striking the Right Balance: Recall Loss for Semantic
Segmentation", ICRA 2022, arXiv 2106.14917)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recallseg.config.schema import Option
from recallseg.losses.functional import class_sums, class_totals_and_flagged, hits_and_predictions_from_log_probs, target_is_top1_from_log_probs
from recallseg.losses.fused.statistics import KERNEL, class_ce_statistics, not_with_triton, use_fused_kernel
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
        denominator: ``"class"`` (the paper: ``w_c = FN_c / N_c``) or ``"union"``
            (``w_c = FN_c / (N_c + FP_c)``, the share of the class's union with its prediction
            that is missed): a class the model already over-predicts weighs less, so pushing
            its recall up costs fewer false positives. Equal to ``"class"`` when nothing is
            mistaken for the class. ``FP_c`` is counted like ``FN_c``: argmax predictions of
            missed pixels, or with ``soft`` the probability other classes' pixels give to c.
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
        "denominator": Option(str, choices=("class", "union"), rule=not_with_triton("class", "counts no false positives")),
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
        denominator: str = "class",
        sync: bool = False,
        kernel: str = "torch",
    ):
        super().__init__(num_classes, ignore_index)
        self.statistics = statistics
        self.momentum = float(momentum)
        self.soft = bool(soft)
        self.denominator = denominator
        self.sync = bool(sync)
        self.kernel = kernel
        # EMA of [N_c, FN_c] (and FP_c for the union); `seen` turns the first update into a plain copy without a host branch.
        self.register_buffer("ema_counts", torch.zeros(3 if denominator == "union" else 2, num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self._last_weights: torch.Tensor | None = None
        self._last_batch_recall: torch.Tensor | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint of the other denominator: [N_c, FN_c] carry over; without a stored FP_c the EMA starts again.
        stored, rows = state_dict.get(prefix + "ema_counts"), self.ema_counts.shape[0]
        if isinstance(stored, torch.Tensor) and stored.dim() == 2 and stored.shape[1:] == self.ema_counts.shape[1:] and stored.shape[0] != rows:
            if stored.shape[0] > rows:
                state_dict[prefix + "ema_counts"] = stored[:rows]
            else:
                state_dict[prefix + "ema_counts"] = torch.zeros_like(self.ema_counts)
                state_dict[prefix + "seen"] = torch.zeros_like(self.seen)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _counts(self, log_probs: torch.Tensor, labels: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        """Stacked ``[N_c, FN_c]`` (``[N_c, FN_c, FP_c]`` for the union) of this batch (float32, 2 or 3 x C);
        ``labels`` are C where ignored."""
        num_classes = self.num_classes
        if self.soft:
            totals = class_sums(labels, None, num_classes)
            misses = class_sums(labels, -torch.expm1(-nll), num_classes)  # 1 - p_n(y_n)
            if self.denominator == "union":
                # sum over other classes' pixels of p_n(c) = all probability given to c - what c's own pixels kept
                valid = (labels != num_classes).unsqueeze(1)
                mass = (log_probs.exp() * valid).sum(dim=[0, *range(2, log_probs.dim())])
                return torch.stack([totals, misses, (mass - (totals - misses)).clamp_min(0)])
        elif self.denominator == "union":
            hit, predicted = hits_and_predictions_from_log_probs(log_probs, nll)
            totals, hits = class_totals_and_flagged(labels, hit, num_classes)
            # A missed pixel is a false positive of the class it was taken for; a hit of none.
            taken_for = torch.where(hit | (labels == num_classes), num_classes, predicted)
            return torch.stack([totals, totals - hits, class_sums(taken_for, None, num_classes)])
        else:
            hit = target_is_top1_from_log_probs(log_probs, nll)
            totals, hits = class_totals_and_flagged(labels, hit, num_classes)
            misses = totals - hits
        return torch.stack([totals, misses])

    def _weights(self, counts: torch.Tensor) -> torch.Tensor:
        """``w_c = FN_c / N_c`` (or ``FN_c / (N_c + FP_c)``) from this batch's counts, after DDP sync and EMA as configured."""
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
        denominator = counts[0] + counts[2] if self.denominator == "union" else counts[0]
        weights = counts[1] / denominator.clamp_min(1e-12)
        weights = torch.where(counts[0] > 0, weights, torch.zeros_like(weights))
        self._last_weights, self._last_batch_recall = weights.detach(), batch_recall.detach()
        return weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.denominator == "class" and use_fused_kernel(self.kernel, logits):
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
