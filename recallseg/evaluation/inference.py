"""Turning images into logits: whole-image or sliding-window inference, with optional flip and
multi-scale test-time augmentation.

Every function takes a normalised float batch ``x [N, 3, H, W]`` on the model's device and
returns float32 logits ``[N, K, H, W]`` at the input size. Nothing here reads a value back
to the host (window positions and sizes are computed from shapes), so a GPU never waits.

- ``whole``: the image in one pass, zero-padded (bottom/right) to a multiple of the model's
  output stride and cropped back.
- ``slide``: ``crop_size`` windows every ``stride`` pixels, the last window of a row/column
  flush with the border; the logits of overlapping windows are averaged (sum / count map).
  A window larger than the image is clamped to the image's size along that axis (so an image
  that fits in one window is predicted whole). Windows are run ``window_batch`` at a time.
- ``flip``: the horizontally flipped batch runs in the same forward pass; its logits are
  flipped back and averaged with the plain ones.
- ``scales``: the image is resized by each factor, predicted, and the logits resized back to
  the input size and averaged (logits, not probabilities: a linear mean, cheap and exact to test).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recallseg.config.construct import resolved
from recallseg.config.schema import INFERENCE, check_value
from recallseg.errors import ConfigError, nearest



def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the bottom/right of ``x`` [N,C,H,W] to a multiple of ``multiple``; returns the original size."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w or torch.jit.is_tracing():  # an exported graph takes any size: it always pads (by 0 where none is needed)
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)


def whole_logits(model: nn.Module, x: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Logits of whole images of any size: pad to ``multiple`` (smp encoders need it), run, crop back."""
    padded, (height, width) = pad_to_multiple(x, multiple)
    return model(padded)[..., :height, :width]


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of logits to the label's size, so predictions are scored at full resolution."""
    if tuple(logits.shape[-2:]) == tuple(size) and not torch.jit.is_tracing():  # an exported graph resizes any size
        return logits
    return F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis: every ``stride``, the last one ending at ``size``."""
    if size <= crop:
        return [0]
    count = math.ceil((size - crop) / stride) + 1
    return sorted({min(i * stride, size - crop) for i in range(count)})


def window_grid(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """``(top, left)`` of every window covering a ``height x width`` image (at least crop-sized)."""
    return [(top, left) for top in window_starts(height, crop[0], stride[0]) for left in window_starts(width, crop[1], stride[1])]


def slide_logits(
    model: nn.Module,
    x: torch.Tensor,
    crop_size: Sequence[int],
    stride: Sequence[int],
    window_batch: int = 8,
    multiple: int = 32,
) -> torch.Tensor:
    """Sliding-window logits of ``x`` [N,C,H,W], averaged where windows overlap; float32 [N,K,H,W].

    ``window_batch`` bounds the crops per forward pass (windows of all N images together);
    each window goes through :func:`whole_logits`, so crops need not be multiples of ``multiple``.
    """
    batch, _, height, width = x.shape
    # A window larger than the image shrinks to it: padding up to the window would predict mostly
    # zeros, worse and many times slower, where the image itself fits in one window.
    crop_h, crop_w = min(int(crop_size[0]), height), min(int(crop_size[1]), width)
    full_h, full_w = height, width
    windows = window_grid(full_h, full_w, (crop_h, crop_w), stride)
    per_pass = max(1, int(window_batch) // batch)
    total = None
    count = torch.zeros((1, 1, full_h, full_w), dtype=torch.float32, device=x.device)
    for start in range(0, len(windows), per_pass):
        chunk = windows[start : start + per_pass]
        crops = torch.cat([x[:, :, top : top + crop_h, left : left + crop_w] for top, left in chunk])
        out = whole_logits(model, crops, multiple).float()
        if total is None:
            total = torch.zeros((batch, out.shape[1], full_h, full_w), dtype=torch.float32, device=x.device)
        for j, (top, left) in enumerate(chunk):
            total[:, :, top : top + crop_h, left : left + crop_w] += out[j * batch : (j + 1) * batch]
            count[:, :, top : top + crop_h, left : left + crop_w] += 1
    return total / count


@dataclass
class InferenceSettings:
    """How images become logits (the ``inference`` section of eval.yaml).

    Attributes:
        mode: ``whole`` or ``slide``.
        crop_size: ``[height, width]`` of the sliding windows.
        stride: ``[height, width]`` step between windows (at most the crop size, so windows cover the image).
        window_batch: windows per forward pass in ``slide`` mode.
        flip: average with the horizontally flipped image's logits.
        scales: resize factors to average over (``[1.0]``: no multi-scale).
        size_multiple: inputs are padded to a multiple of this (the model's output stride).
    """

    mode: str = "whole"
    crop_size: tuple[int, int] = (512, 1024)
    stride: tuple[int, int] = (384, 768)
    window_batch: int = 8
    flip: bool = False
    scales: tuple[float, ...] = field(default=(1.0,))
    size_multiple: int = 32

    def __post_init__(self) -> None:
        # Sizes may be given as one number; every value is then checked by the config schema's rule.
        self.crop_size = _pair(self.crop_size)
        self.stride = _pair(self.stride)
        self.scales = tuple(self.scales) if isinstance(self.scales, (list, tuple)) else (self.scales,)
        for name, option in INFERENCE.items():
            value = getattr(self, name)
            check_value(f"inference.{name}", list(value) if isinstance(value, tuple) else value, option)
        if any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(
                "inference.stride", f"{list(self.stride)} is larger than inference.crop_size {list(self.crop_size)}: windows would leave gaps",
                "use a stride of at most the crop size (e.g. 2/3 of it)",
            )
        self.crop_size, self.stride = tuple(self.crop_size), tuple(self.stride)
        self.scales = tuple(float(s) for s in self.scales)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "InferenceSettings":
        """From the ``inference`` config section (missing keys take the defaults; unknown keys are an error)."""
        cfg = dict(resolved(cfg) or {})
        for key in cfg:
            if key not in INFERENCE:
                hint = nearest(key, list(INFERENCE))
                raise ConfigError(f"inference.{key}", "is not a known option", f"did you mean inference.{hint}?" if hint else f"known: {', '.join(INFERENCE)}")
        return cls(**cfg)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for metrics.json."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _pair(value: Any) -> Any:
    """``[v, v]`` for one number; anything else as given (the schema checks it)."""
    return [value, value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def check_size_multiple(settings: InferenceSettings, divisor: int | None) -> None:
    """Refuse a ``size_multiple`` the network cannot take (``divisor``: ``models.builder.input_divisor``)."""
    if divisor is not None and settings.size_multiple % divisor:
        raise ConfigError(
            "inference.size_multiple", f"{settings.size_multiple} pads images to multiples of {settings.size_multiple}, but the model "
            f"needs sides divisible by {divisor} (its output stride)", f"set inference.size_multiple={divisor} (or a multiple of it)",
        )


class Inference:
    """``Inference(settings)(model, x)``: logits at the input size, with the settings' mode and TTA."""

    def __init__(self, settings: InferenceSettings | None = None):
        self.settings = settings or InferenceSettings()

    def single_pass(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if s.mode == "slide":
            return slide_logits(model, x, s.crop_size, s.stride, s.window_batch, s.size_multiple)
        return whole_logits(model, x, s.size_multiple).float()

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        batch, _, height, width = x.shape
        total = None
        for scale in s.scales:
            scaled = x
            if scale != 1.0:
                size = (max(int(round(height * scale)), 1), max(int(round(width * scale)), 1))
                scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if s.flip:  # plain and mirrored images in one forward pass
                both = self.single_pass(model, torch.cat([scaled, scaled.flip(-1)]))
                logits = both[:batch] + both[batch:].flip(-1)
            else:
                logits = self.single_pass(model, scaled)
            logits = resize_logits(logits, (height, width))
            total = logits if total is None else total + logits
        return total / (len(s.scales) * (2 if s.flip else 1))
