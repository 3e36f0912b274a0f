"""Fixed per-class weights from training-split statistics, for weighted cross entropy and its kin."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from recallseg.errors import ConfigError, DatasetError

WEIGHT_MODES = ("inverse", "median_count", "median_frequency", "effective_number")
# ``median`` was the name of ``median_count`` before ``median_frequency`` existed.
RENAMED_MODES = {"median": "median_count"}


def effective_number_beta(beta: float | str, counts: torch.Tensor) -> float:
    """``beta`` as a number: ``"auto"`` is ``(N - 1) / N`` with N the labelled training pixels."""
    if isinstance(beta, str):
        if beta != "auto":
            raise ConfigError("loss.beta", f"must be a number in [0, 1) or 'auto', got {beta!r}")
        total = float(counts.sum())
        return (total - 1.0) / total
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ConfigError("loss.beta", f"must be in [0, 1) or 'auto', got {beta}")
    return beta


def class_weights_from_counts(
    counts: Sequence[float] | torch.Tensor,
    mode: str = "median_count",
    beta: float | str = "auto",
    image_pixels: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-class weights from training-split pixel counts, normalised to mean 1 over present classes.

    - ``inverse``: ``w_c = 1 / f_c`` with ``f_c = n_c / sum(n)`` the class frequency;
    - ``median_count``: ``w_c = median(n) / n_c``, the median over present classes. This is
      inverse frequency up to a constant factor, which the normalisation removes; it is what
      the paper's code calls median frequency, but it is not Eigen & Fergus's rule;
    - ``median_frequency`` (Eigen & Fergus, ICCV 2015): ``freq_c = n_c / P_c`` with ``P_c`` the
      labelled pixels of the training images in which c appears (``image_pixels``), and
      ``w_c = median(freq) / freq_c``. A class that covers much of the few images it appears in
      gets a high frequency, unlike under ``median_count``;
    - ``effective_number``: ``w_c = (1 - beta) / (1 - beta ** n_c)`` (Cui et al., CVPR 2019);
      ``beta = "auto"`` is ``(N - 1) / N`` with N the labelled pixels of the split.

    A class with no pixels in the training split gets weight 0: it cannot be learnt anyway,
    and an infinite weight would wreck the loss if it ever appeared.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise DatasetError(f"class pixel counts must be a 1-D list of non-negative numbers, got {counts.tolist()}; recompute the class statistics")
    present = counts > 0
    if not present.any():
        raise DatasetError("every class has zero pixels in the training split, so no class weights can be derived; check dataset.root and the labels")
    mode = RENAMED_MODES.get(mode, mode)
    safe = torch.where(present, counts, torch.ones_like(counts))
    if mode == "inverse":
        raw = counts.sum() / safe
    elif mode == "median_count":
        raw = counts[present].median() / safe
    elif mode == "median_frequency":
        if image_pixels is None:
            raise DatasetError(
                "median_frequency needs, per class, the labelled pixels of the training images containing it; "
                "the class statistics give none (a statistics file from an older recallseg-class-stats?): rewrite it"
            )
        image_pixels = torch.as_tensor(image_pixels, dtype=torch.float64)
        if image_pixels.shape != counts.shape or (image_pixels < counts).any():
            raise DatasetError(f"image pixel totals {image_pixels.tolist()} must have one entry >= the pixel count per class; recompute the class statistics")
        freq = counts / torch.where(present, image_pixels, torch.ones_like(image_pixels))
        raw = freq[present].median() / torch.where(present, freq, torch.ones_like(freq))
    elif mode == "effective_number":
        beta = effective_number_beta(beta, counts)
        # 1 - beta ** n computed as -expm1(n * log(beta)): exact even for beta within 1e-9 of 1.
        raw = (1.0 - beta) / -torch.expm1(counts * math.log(beta)) if beta > 0 else torch.ones_like(counts)
    else:
        raise ConfigError("loss.mode", f"unknown class weight mode {mode!r}", f"choose one of {', '.join(WEIGHT_MODES)}")
    weights = torch.where(present, raw, torch.zeros_like(raw))
    weights = weights / weights[present].mean()
    return weights.to(torch.float32)
