"""Fixed per-class weights from pixel counts, for weighted cross entropy and its kin."""

from __future__ import annotations

from typing import Sequence

import torch

WEIGHT_MODES = ("inverse", "median", "effective_number")


def class_weights_from_counts(counts: Sequence[float] | torch.Tensor, mode: str = "median", beta: float = 0.999) -> torch.Tensor:
    """Per-class weights from training-split pixel counts, normalised to mean 1 over present classes.

    - ``inverse``: ``w_c = 1 / f_c`` with ``f_c`` the class frequency;
    - ``median``: ``w_c = median(f) / f_c`` (Eigen & Fergus), the median over present classes;
    - ``effective_number``: ``w_c = (1 - beta) / (1 - beta ** n_c)`` (Cui et al., CVPR 2019).

    A class with no pixels in the training split gets weight 0: it cannot be learnt anyway,
    and an infinite weight would wreck the loss if it ever appeared.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"class pixel counts must be a 1-D list of non-negative numbers, got {counts.tolist()}")
    present = counts > 0
    if not present.any():
        raise ValueError("every class has zero pixels in the training split; cannot derive class weights")
    freq = counts / counts.sum()
    if mode == "inverse":
        raw = 1.0 / freq
    elif mode == "median":
        raw = freq[present].median() / freq
    elif mode == "effective_number":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    else:
        raise ValueError(f"unknown class weight mode {mode!r}; choose one of {WEIGHT_MODES}")
    weights = torch.where(present, raw, torch.zeros_like(raw))
    weights = weights / weights[present].mean()
    return weights.to(torch.float32)
