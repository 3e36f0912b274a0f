"""Losses: one module per loss, all reachable through the registry (``build_loss``)."""

from .registry import LOSSES, LossContext, SegmentationLoss, available_losses, build_loss, loss_config, register_loss
from .class_weights import class_weights_from_counts
from .cross_entropy import CrossEntropyLoss
from .weighted_cross_entropy import WeightedCrossEntropyLoss
from .recall import RecallLoss

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
from .focal import FocalLoss
from .lovasz import LovaszLoss
from .ohem import OhemCrossEntropyLoss
from .class_balanced import ClassBalancedCrossEntropyLoss
from .combined import CombinedLoss
from .soft_iou import SoftIoULoss

__all__ += ["FocalLoss", "LovaszLoss", "OhemCrossEntropyLoss", "ClassBalancedCrossEntropyLoss", "CombinedLoss", "SoftIoULoss"]
