"""Lovász-softmax loss (Berman et al., CVPR 2018): a convex surrogate of the per-class Jaccard loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recallseg.losses.functional import check_labels, safe_target, valid_mask
from recallseg.losses.registry import RegionLoss

# Why not segmentation_models_pytorch.losses.LovaszLoss: it drops ignored pixels with
# boolean-mask indexing (`probas[labels != ignore]`), skips absent classes with a Python
# `if fg.sum() == 0` and loops over classes in Python. Each of those is a host-device sync
# per class per step, and `classes` is not exposed. The version below keeps every pixel:
# an ignored pixel gets error 0 and counts in neither the foreground nor the union, so it
# sorts after every pixel with a positive error and multiplies a zero. All classes (and, with
# per_image, all images) are sorted in one batched call.


def lovasz_softmax(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, classes: str = "present", per_image: bool = False
) -> torch.Tensor:
    """Lovász-softmax of ``logits (N, C, d1, ..., dk)`` against ``target (N, d1, ..., dk)``; see ``LovaszLoss``."""
    num_classes = logits.shape[1]
    check_labels(target, num_classes, ignore_index, "LovaszLoss")
    probs = F.softmax(logits.float(), dim=1)
    valid = valid_mask(target, ignore_index)
    safe = safe_target(target, valid)
    batch = logits.shape[0] if per_image else 1
    probs = probs.reshape(logits.shape[0], num_classes, -1)  # N x C x P
    if not per_image:
        probs = probs.transpose(0, 1).reshape(1, num_classes, -1)  # 1 x C x (N*P), pixel order irrelevant
    valid = valid.reshape(batch, 1, -1)
    classes_range = torch.arange(num_classes, device=target.device).view(1, num_classes, 1)
    foreground = (safe.reshape(batch, 1, -1) == classes_range) & valid  # B x C x P

    errors = (foreground.float() - probs).abs() * valid
    errors_sorted, order = torch.sort(errors, dim=2, descending=True)
    foreground_sorted = foreground.gather(2, order).float()
    valid_sorted = valid.expand_as(foreground).gather(2, order).float()
    # Gradient of the Lovász extension of the Jaccard loss (Berman et al., Alg. 1):
    # J_k = 1 - |gt minus first k| / |gt plus non-gt among first k|, differenced along k.
    gt_total = foreground_sorted.sum(dim=2, keepdim=True)
    intersection = gt_total - foreground_sorted.cumsum(dim=2)
    union = gt_total + (valid_sorted - foreground_sorted).cumsum(dim=2)
    jaccard = 1.0 - intersection / union.clamp_min(1.0)  # union is a count: 0 only before any valid pixel
    jaccard = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=2)
    per_class = (errors_sorted * jaccard).sum(dim=2)  # B x C

    if classes == "present":
        chosen = (gt_total.squeeze(2) > 0).float()
    else:
        chosen = torch.ones_like(per_class)
    per_group = (per_class * chosen).sum(dim=1) / chosen.sum(dim=1).clamp_min(1.0)  # B
    # Images without a valid pixel take no part in the per-image mean.
    has_pixels = valid.reshape(batch, -1).any(dim=1).float()
    return (per_group * has_pixels).sum() / has_pixels.sum().clamp_min(1.0)


class LovaszLoss(RegionLoss):
    """Lovász-softmax: the Lovász extension of each class's Jaccard loss, applied to softmax errors.

    For class c, the errors ``|[y_n == c] - p_n(c)|`` are sorted in decreasing order and
    dotted with the gradient of the Jaccard loss along that order; the loss is the mean over
    classes. It optimises IoU directly rather than per-pixel likelihood.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part (error 0, outside every class and union).
        classes: ``"present"`` averages over the classes that have a non-ignored pixel in the
            batch (or image); ``"all"`` over all C classes (an absent class then costs its
            largest predicted probability).
        per_image: compute the loss per image and average over images that have a non-ignored
            pixel; otherwise over the whole batch as one image.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar. A batch
    whose pixels are all ignored gives 0 with zero gradient. Cost: one sort of ``C x N*H*W``
    values per step.

    Reference: Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss", CVPR 2018,
    https://arxiv.org/abs/1705.08790
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(logits, target, self.ignore_index, self.classes, self.per_image)
