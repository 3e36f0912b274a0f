"""The one image resize: what ``dataset.resize`` does to a frame and what the model's input
pipeline (``evaluation.model_input``) does to any image before the network.

Bilinear with half-pixel centres and no antialiasing (``F.interpolate(..., align_corners=False)``,
the sampling OpenCV's ``INTER_LINEAR`` uses too), rounded back to uint8. A frame resized when a
dataset loads it and an image resized by ``recallseg-predict`` are equal. It is written in torch
so that the exported ONNX graph runs the same operations; onnxruntime's ``Resize`` orders its
float arithmetic differently, so a value within rounding error of a half grey level can land
one level away there (docs/export.md, "Tested accuracy").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def resize_images(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` to uint8 ``[N, height, width, 3]`` (``size``: ``(height, width)``)."""
    x = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """One uint8 ``H x W x 3`` array resized to ``size`` = ``(height, width)`` (``resize_images``)."""
    return np.ascontiguousarray(resize_images(torch.from_numpy(np.ascontiguousarray(image))[None], size)[0].numpy())
