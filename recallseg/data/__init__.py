"""Datasets, transforms, loaders and class statistics."""

from .base import SegmentationDataset
from .builder import build_dataset
from .synthetic import SyntheticStreets

__all__ = ["SegmentationDataset", "build_dataset", "SyntheticStreets"]
