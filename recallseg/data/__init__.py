"""Datasets, transforms, loaders and class statistics."""

from .base import SegmentationDataset
from .builder import build_dataset
from .cache import CachedDataset
from .cityscapes import Cityscapes
from .folder import FolderDataset
from .io import DatasetError
from .synthetic import SyntheticStreets
from .synthia import Synthia, SynthiaRandCityscapes

__all__ = [
    "SegmentationDataset",
    "build_dataset",
    "CachedDataset",
    "Cityscapes",
    "DatasetError",
    "FolderDataset",
    "SyntheticStreets",
    "Synthia",
    "SynthiaRandCityscapes",
]
