"""Losses: one module per loss, all reachable through the registry (``build_loss``)."""

from recallseg.losses.registry import LOSSES, LossContext, SegmentationLoss, available_losses, build_loss, loss_config, register_loss
from recallseg.losses.class_weights import class_weights_from_counts
from recallseg.losses.cross_entropy import CrossEntropyLoss
from recallseg.losses.weighted_cross_entropy import WeightedCrossEntropyLoss
from recallseg.losses.recall import RecallLoss

__all__ = [
    "LOSSES",
    "LossContext",
    "SegmentationLoss",
    "available_losses",
    "build_loss",
    "loss_config",
    "register_loss",
    "class_weights_from_counts",
    "CrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "RecallLoss",
]
from recallseg.losses.focal import FocalLoss
from recallseg.losses.lovasz import LovaszLoss
from recallseg.losses.ohem import OhemCrossEntropyLoss
from recallseg.losses.class_balanced import ClassBalancedCrossEntropyLoss
from recallseg.losses.combined import CombinedLoss
from recallseg.losses.soft_iou import SoftIoULoss

__all__ += ["FocalLoss", "LovaszLoss", "OhemCrossEntropyLoss", "ClassBalancedCrossEntropyLoss", "CombinedLoss", "SoftIoULoss"]
