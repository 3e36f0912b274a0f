"""The model's input pipeline: one definition, from the checkpoint's stored config, of what
validation, ``evaluate.py``, ``recallseg-predict`` and the exported ONNX model do around the
network.

    uint8 RGB image [H, W, 3], any size
      -> resized to ``dataset.resize`` when it is set (``data.resize``: what the dataset does to
         validation's frames), then ``dataset.val_transform`` when there is one
      -> normalised (``runtime.normalize.Normalizer``: ``model.mean``, ``model.std``, ``model.channel_order``)
      -> padded bottom/right to a multiple of ``inference.size_multiple``, the network, the logits
         cropped back (``evaluation.inference``; with ``inference.*`` test-time augmentation)
      -> the logits resized (bilinear) to the image's own size, argmax

The mask is produced at the resolution of the image given, which is the label file's: a label
has its image's size. ``evaluation.full_resolution=false`` is the one exception, scoring at the
size of the mask the dataset pipeline returns (the resized one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from recallseg.config.schema import DATASET_RESERVED, INFERENCE, EVALUATION, Option, check_value
from recallseg.data.resize import resize_image, resize_images
from recallseg.evaluation.inference import Inference, InferenceSettings, resize_logits
from recallseg.runtime.device import Runtime
from recallseg.runtime.normalize import Normalizer, input_statistics

RESIZE = Option(list, length=2, item=int, positive_items=True, null=True)


@dataclass(frozen=True)
class ModelInput:
    """What a checkpoint's validation did to an image before and after its network (see the module docstring).

    ``resize``: ``(height, width)`` or None; ``val_transform``: the stored transform list or None,
    built as validation built it (with the dataset's ``ignore_index``); ``size_multiple`` and
    ``full_resolution``: validation's ``inference.size_multiple`` and ``evaluation.full_resolution``."""

    resize: tuple[int, int] | None
    val_transform: list | None
    ignore_index: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    size_multiple: int
    full_resolution: bool

    @classmethod
    def from_config(cls, stored: Mapping[str, Any]) -> "ModelInput":
        """From a checkpoint's stored config, read as data and checked (it is untrusted)."""
        dataset, (mean, std, channel_order) = stored.get("dataset") or {}, input_statistics(stored.get("model") or {})
        inference, evaluation = stored.get("inference") or {}, stored.get("evaluation") or {}
        resize, transform, ignore_index = dataset.get("resize"), dataset.get("val_transform"), dataset.get("ignore_index", 255)
        multiple, full = inference.get("size_multiple", 32), evaluation.get("full_resolution", True)
        check_value("dataset.resize", resize, RESIZE)
        check_value("dataset.val_transform", transform, DATASET_RESERVED["val_transform"])
        check_value("dataset.ignore_index", ignore_index, Option(int))
        check_value("inference.size_multiple", multiple, INFERENCE["size_multiple"])
        check_value("evaluation.full_resolution", full, EVALUATION["full_resolution"])
        return cls(
            None if resize is None else (int(resize[0]), int(resize[1])), transform or None, int(ignore_index), tuple(mean), tuple(std),
            channel_order, int(multiple), bool(full),
        )  # fmt: skip

    def settings(self, options: Mapping[str, Any] | None = None) -> InferenceSettings:
        """The inference settings of a run: ``options`` (``inference.*``: test-time augmentation) over
        this pipeline's padding; a ``size_multiple`` of None is this pipeline's."""
        options = {k: v for k, v in dict(options or {}).items() if not (k == "size_multiple" and v is None)}
        return InferenceSettings.from_config({"size_multiple": self.size_multiple, **options})

    def normalizer(self, runtime: Runtime) -> Normalizer:
        return Normalizer(self.mean, self.std, runtime, self.channel_order)

    def frame_transform(self, named_by_user: frozenset[str] = frozenset()) -> Callable[[np.ndarray], np.ndarray]:
        """An image file's pixels as validation handed them to the normaliser: resized, then ``val_transform``."""
        from recallseg.pipeline.transforms import build_transform

        transform = build_transform(self.val_transform, ignore_index=self.ignore_index, where="dataset.val_transform", trusted=False, named_by_user=named_by_user)

        def frame(image: np.ndarray) -> np.ndarray:
            if self.resize is not None and tuple(image.shape[:2]) != self.resize:
                image = resize_image(image, self.resize)
            return image if transform is None else np.ascontiguousarray(transform(image=image)["image"])

        return frame


class Segmenter(nn.Module):
    """The network inside its input pipeline: uint8 RGB ``[N, H, W, 3]`` to float32 logits ``[N, K, h, w]``.

    ``size`` (default: the input's) is where the logits are produced. ``resize`` resizes the input
    first (``data.resize``): the exported graph's way of doing what datasets and ``frame_transform``
    do to an image before it reaches here. ``inference(network, x)`` returns logits at ``x``'s size
    (``evaluation.inference.Inference``: padding, windows, test-time augmentation)."""

    def __init__(self, network: nn.Module, normalizer: Normalizer, inference: Callable[[nn.Module, torch.Tensor], torch.Tensor], resize: Sequence[int] | None = None):
        super().__init__()
        self.network, self.normalizer, self.inference = network, normalizer, inference
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))

    @classmethod
    def for_checkpoint(cls, network: nn.Module, model_input: ModelInput, runtime: Runtime, settings: InferenceSettings, resize: bool = False) -> "Segmenter":
        return cls(network, model_input.normalizer(runtime), Inference(settings), model_input.resize if resize else None)

    def forward(self, images: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        size = images.shape[1:3] if size is None else size
        if self.resize is not None:
            images = resize_images(images, self.resize)
        return resize_logits(self.inference(self.network, self.normalizer(images)), size)
