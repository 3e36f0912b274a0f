"""Soft IoU (soft Jaccard) loss: one minus the mean over classes of a differentiable IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recallseg.losses.functional import check_labels, safe_target, valid_mask
from recallseg.losses.registry import RegionLoss


def soft_iou_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, classes: str = "present", per_image: bool = False
) -> torch.Tensor:
    """Soft IoU loss of ``logits (N, C, d1, ..., dk)`` against ``target (N, d1, ..., dk)``; see ``SoftIoULoss``."""
    num_classes = logits.shape[1]
    # One axis of positions (pixels, points, voxels) per sample: (N, C, P) and (N, P).
    logits, target = logits.reshape(logits.shape[0], num_classes, -1), target.reshape(target.shape[0], -1)
    check_labels(target, num_classes, ignore_index, "SoftIoULoss")
    probs = F.softmax(logits.float(), dim=1)
    valid = valid_mask(target, ignore_index).unsqueeze(1)  # N x 1 x P
    safe = safe_target(target, valid.squeeze(1))
    onehot = F.one_hot(safe, num_classes).permute(0, 2, 1).to(probs.dtype) * valid
    probs = probs * valid  # an ignored pixel is in neither sum: its logits cannot matter
    dims = (2,) if per_image else (0, 2)
    intersection = (probs * onehot).sum(dim=dims)
    union = (probs + onehot - probs * onehot).sum(dim=dims)
    iou = intersection / union.clamp_min(torch.finfo(probs.dtype).tiny)  # union 0 only without a valid pixel
    iou = iou.reshape(-1 if per_image else 1, num_classes)  # groups x C
    if classes == "present":
        chosen = (onehot.sum(dim=dims).reshape(iou.shape) > 0).to(iou.dtype)
    else:
        chosen = torch.ones_like(iou)
    has_pixels = (valid.sum(dim=(1, 2)) > 0 if per_image else valid.any().reshape(1)).to(iou.dtype)
    per_group = 1.0 - (iou * chosen).sum(dim=1) / chosen.sum(dim=1).clamp_min(1.0)
    return (per_group * has_pixels).sum() / has_pixels.sum().clamp_min(1.0)


class SoftIoULoss(RegionLoss):
    """Soft IoU loss: ``1 - mean_c I_c / U_c`` with soft counts from the softmax probabilities.

    For class c, ``I_c = sum_n p_n(c) [y_n = c]`` and ``U_c = sum_n p_n(c) + [y_n = c] - p_n(c) [y_n = c]``
    over the non-ignored pixels n (of the batch, or of each image with ``per_image``). Ignored
    pixels are in neither sum; the paper's code keeps their probabilities in the union.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part.
        classes: ``"present"`` averages over the classes with a non-ignored pixel in the batch
            (or image); ``"all"`` over all C classes (an absent class has IoU 0 and no gradient,
            as in the paper's code).
        per_image: the loss of each image, averaged over the images with a non-ignored pixel
            (the paper's code), instead of the whole batch as one image.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar. A batch
    whose pixels are all ignored gives 0 with zero gradient.

    Reference: Rahman & Wang, "Optimizing Intersection-over-Union in Deep Neural Networks for
    Image Segmentation", ISVC 2016.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_iou_loss(logits, target, self.ignore_index, self.classes, self.per_image)
