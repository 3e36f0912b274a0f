"""Scoring a model on a dataset split: one confusion matrix, accumulated on the device."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from recallseg.evaluation.metrics import ConfusionMatrix
from recallseg.evaluation.inference import whole_logits
from recallseg.evaluation.model_input import Segmenter
from recallseg.runtime.device import Runtime, to_target
from recallseg.runtime.normalize import Normalizer

# on_prediction(prediction [H, W] class ids on the device, dataset index, the batch dict)
PredictionCallback = Callable[[torch.Tensor, int, dict], None]


def _groups(batch: Any) -> list[tuple[torch.Tensor, torch.Tensor, list[int] | None]]:
    """``(images [N,H,W,3], masks [N,h,w], dataset indices)`` groups of one loader batch.

    A batch is either the plain ``(images, masks)`` pair of the training loaders or a
    ``collate_evaluation`` dict; in the latter, differently sized samples come as lists and
    form one group each.
    """
    if not isinstance(batch, dict):
        images, masks = batch
        return [(images, masks, None)]
    images, masks, indices = batch["image"], batch["mask"], batch["index"]
    if isinstance(images, torch.Tensor) and isinstance(masks, torch.Tensor):
        return [(images, masks, indices)]
    return [(image[None], mask[None], [index]) for image, mask, index in zip(images, masks, indices)]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    normalizer: Normalizer,
    runtime: Runtime,
    num_classes: int,
    ignore_index: int,
    predict: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    on_prediction: PredictionCallback | None = None,
    progress: bool = True,
) -> ConfusionMatrix:
    """Run ``model`` over ``loader`` and return the (all-reduced) confusion matrix.

    ``predict(model, x)`` returns logits at the input size (whole-image inference by default;
    see ``evaluation.inference.Inference``). The images go through the model's input pipeline
    (``evaluation.model_input.Segmenter``, as in recallseg-predict and the exported ONNX model),
    which resizes the logits to the mask's size before the argmax, so a mask at the label's full
    resolution is scored at that resolution.
    ``on_prediction`` receives each sample's prediction (to save it, say); it needs
    ``collate_evaluation`` batches, which carry the dataset indices. Nothing here
    synchronises with the host per batch, unless ``on_prediction`` copies to the host.
    """
    segment = Segmenter(model, normalizer, predict or whole_logits)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index, runtime.device)
    batches = tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=not (progress and runtime.is_main))
    for batch in batches:
        for images, masks, indices in _groups(batch):
            target = to_target(masks, runtime.device)
            with runtime.autocast():
                prediction = segment(images, target.shape[-2:]).argmax(1)
            matrix.update(prediction, target)
            if on_prediction is not None:
                if indices is None:
                    raise ValueError("on_prediction needs batches from evaluation.samples.collate_evaluation (with dataset indices)")
                for row, index in enumerate(indices):
                    on_prediction(prediction[row], index, batch)
    matrix.all_reduce()
    model.train(was_training)
    return matrix
