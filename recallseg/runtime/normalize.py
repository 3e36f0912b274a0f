"""The network's input step: a uint8 ``[N, H, W, 3]`` batch to the normalised float ``[N, 3, H, W]``.

One class for training, evaluation, prediction and the exported ONNX model (``raw_input=true``),
so every consumer normalises exactly alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recallseg.runtime.device import Runtime


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def input_statistics(model_cfg: Any) -> tuple[list[float], list[float], str]:
    """``(mean, std, channel_order)`` of a ``model`` config section; ImageNet's and rgb where it gives none."""
    get = model_cfg.get
    return list(get("mean") or IMAGENET_MEAN), list(get("std") or IMAGENET_STD), str(get("channel_order") or "rgb")


class Normalizer(nn.Module):
    """Turns a uint8 ``[N, H, W, 3]`` RGB batch into the normalised float ``[N, 3, H, W]`` the network takes, on the device.

    ``channel_order="bgr"`` hands the network the channels in B, G, R order (a network trained on
    OpenCV-decoded images, as the paper's Synthia code does); ``mean`` and ``std`` are then in
    that order too (fractions of 255). The permute makes a channels-last view for free;
    ``.contiguous()`` is only paid when the model runs channels-first.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], runtime: Runtime, channel_order: str = "rgb"):
        super().__init__()
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"model.channel_order must be rgb or bgr, got {channel_order!r}")
        self.device, self.channels_last, self.channel_order = runtime.device, runtime.channels_last, channel_order
        std_255 = torch.tensor(std, dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1) * 255.0
        mean_255 = torch.tensor(mean, dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1) * 255.0
        self.register_buffer("scale", 1.0 / std_255)
        self.register_buffer("shift", -mean_255 / std_255)

    @classmethod
    def for_model(cls, model_cfg: Any, runtime: Runtime) -> "Normalizer":
        """The normaliser a ``model`` config section describes (``mean``, ``std``, ``channel_order``)."""
        mean, std, channel_order = input_statistics(model_cfg)
        return cls(mean, std, runtime, channel_order)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.scale.device, non_blocking=True).permute(0, 3, 1, 2)
        if self.channel_order == "bgr":
            x = x.flip(1)
        x = torch.addcmul(self.shift, x.float(), self.scale)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()
