"""Turning images into logits: whole-image inference padded to the model's stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the bottom/right of ``x`` [N,C,H,W] to a multiple of ``multiple``; returns the original size."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)


def whole_logits(model: nn.Module, x: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Logits of whole images of any size: pad to ``multiple`` (smp encoders need it), run, crop back."""
    padded, (height, width) = pad_to_multiple(x, multiple)
    return model(padded)[..., :height, :width]


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of logits to the label's size, so predictions are scored at full resolution."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
