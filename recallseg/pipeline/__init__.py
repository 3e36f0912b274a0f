"""From a dataset config to batches: the dataset with its transforms and cache, loaders, class statistics."""

from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.cache import CachedDataset

__all__ = ["build_dataset", "CachedDataset"]
