"""Datasets: the built-in ones and the base class of your own (reading files, checking labels)."""

from recallseg.data.base import SegmentationDataset
from recallseg.data.cityscapes import Cityscapes
from recallseg.data.folder import FolderDataset
from recallseg.data.synthetic import SyntheticStreets
from recallseg.data.synthia import Synthia, SynthiaRandCityscapes
from recallseg.errors import DatasetError

__all__ = [
    "SegmentationDataset",
    "Cityscapes",
    "DatasetError",
    "FolderDataset",
    "SyntheticStreets",
    "Synthia",
    "SynthiaRandCityscapes",
]
