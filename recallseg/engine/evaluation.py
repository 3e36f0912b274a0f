"""Scoring a model on a dataset split: one confusion matrix, accumulated on the device."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..metrics import ConfusionMatrix
from .inference import resize_logits, whole_logits
from .runtime import Normalizer, Runtime


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    normalizer: Normalizer,
    runtime: Runtime,
    num_classes: int,
    ignore_index: int,
    predict: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor, int], None] | None = None,
    progress: bool = True,
) -> ConfusionMatrix:
    """Run ``model`` over ``loader`` and return the (all-reduced) confusion matrix.

    ``predict(model, x)`` returns logits (whole-image inference by default); ``on_batch``
    receives predictions, targets and the batch index (to save predictions, say).
    Nothing here synchronises with the host per batch.
    """
    predict = predict or whole_logits
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index, runtime.device)
    batches = tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=not (progress and runtime.is_main))
    for batch_index, (images, masks) in enumerate(batches):
        x = normalizer(images)
        target = masks.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = predict(model, x)
        prediction = resize_logits(logits, target.shape[-2:]).argmax(1)
        matrix.update(prediction, target)
        if on_batch is not None:
            on_batch(prediction, target, batch_index)
    matrix.all_reduce()
    model.train(was_training)
    return matrix
