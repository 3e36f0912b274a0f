"""Every loss treats a label outside the classes as F.cross_entropy does, and returns float32."""

from types import SimpleNamespace

import pytest
import torch

from recallseg.config.files import group_options
from recallseg.losses import LossContext, build_loss

C = 4


def loss(name):
    # Pixel counts of the training split and, per class, the labelled pixels of its images holding it.
    statistics = SimpleNamespace(pixel_counts=torch.tensor([10, 20, 30, 40]), image_pixels=torch.tensor([90, 90, 60, 40]))
    context = LossContext(C, class_statistics=lambda: statistics)
    return build_loss(name, context, **({"weights": [1.0] * C} if name == "weighted_ce" else {}))


@pytest.mark.parametrize("name", ["lovasz", "soft_iou", "ce"])
@pytest.mark.parametrize("label", [C, -1, 254])
def test_a_label_neither_a_class_nor_ignored_fails_as_in_cross_entropy(name, label):
    target = torch.randint(0, C, (2, 6, 6))
    target[0, 0, 0] = 255  # ignored: fine
    target[1, 2, 3] = label
    with pytest.raises((RuntimeError, IndexError)):
        loss(name)(torch.randn(2, C, 6, 6), target)


def test_every_loss_computes_in_float32_whatever_the_logits_dtype():
    """As documented on SegmentationLoss: float64 logits give a float32 loss, as AMP's half ones do."""
    own = group_options("loss")  # recallseg's: other tests register losses of their own
    losses, target = {name: loss(name) for name in own}, torch.randint(0, C, (2, 6, 6))
    for dtype in (torch.float64, torch.bfloat16):
        logits = torch.randn(2, C, 6, 6, dtype=dtype)
        assert {name: fn(logits, target).dtype for name, fn in losses.items()} == dict.fromkeys(losses, torch.float32), dtype
