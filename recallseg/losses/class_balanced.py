"""Class-balanced cross entropy (Cui et al., "Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from recallseg.losses.class_weights import class_weights_from_counts
from recallseg.losses.fused.statistics import KERNEL
from recallseg.losses.registry import LossContext
from recallseg.losses.weighted_cross_entropy import BETA, NORMALIZE, WeightedCrossEntropyLoss
from recallseg.errors import ConfigError

log = logging.getLogger(__name__)


class ClassBalancedCrossEntropyLoss(WeightedCrossEntropyLoss):
    """Cross entropy weighted by the inverse effective number of samples of each class.

    ``w_c = (1 - beta) / (1 - beta ** n_c)`` with ``n_c`` the pixel count of class c in the
    *training* split (from the ``LossContext``'s class statistics, never the validation split),
    normalised to mean 1 over the classes present; a class with no training pixels gets 0.

    ``beta = "auto"`` (the default) is ``(N - 1) / N`` with N the labelled pixels of the training
    split, the choice of the recall-loss paper's code. Then ``beta ** n_c ~ exp(-n_c / N)`` and
    ``w_c ~ 1 / (1 - exp(-f_c))`` with ``f_c`` the class frequency: close to inverse frequency
    for rare classes, flatter for frequent ones. A fixed beta such as Cui et al.'s 0.999 was
    chosen for *image* counts; on *pixel* counts (millions per class) ``beta ** n_c`` vanishes:
    it is below 0.7% for every class above 5,000 pixels, and ``1 - beta ** n_c`` rounds to
    exactly 1 in double precision above ~37,000 pixels. Every class then gets the same weight
    and the loss is plain cross entropy. ``beta = 0`` weighs all present classes
    equally; ``beta -> 1`` tends to inverse frequency.

    Args:
        num_classes: number of classes C.
        weights: the C class weights (``from_config`` computes them from ``beta``).
        ignore_index: label of pixels that take no part.
        normalize: ``"weights"`` (PyTorch's weighted mean, ``sum w[y] CE / sum w[y]``) or
            ``"pixels"`` (divide by the number of non-ignored pixels).

        kernel: ``"torch"``, ``"triton"`` or ``"auto"``, as for recall loss.

    YAML options: ``beta`` (a number in [0, 1) or ``auto``), ``normalize`` and ``kernel``.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar.

    Reference: https://arxiv.org/abs/1901.05555
    """

    # The weights come from beta and the training split, never from the config.
    options = {"beta": BETA, "normalize": NORMALIZE, "kernel": KERNEL}

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: LossContext) -> "ClassBalancedCrossEntropyLoss":
        options = dict(options)
        if context.class_pixel_counts is None:
            raise ConfigError(
                "loss", "class_balanced needs the training split's class pixel counts",
                "build it through the trainer (a dataset) or use loss=weighted_ce with loss.weights=[...]",
            )
        beta = options.pop("beta", "auto")
        weights = class_weights_from_counts(context.class_pixel_counts(), mode="effective_number", beta=beta)
        log.info("%s class weights from the training split's statistics (beta %s): %s", cls.__name__, beta, [round(float(w), 4) for w in weights])
        return cls(num_classes=context.num_classes, ignore_index=context.ignore_index, weights=weights.tolist(), **options)
