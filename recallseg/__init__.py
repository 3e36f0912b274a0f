"""recallseg: semantic segmentation for class-imbalanced data, built around recall loss."""

__version__ = "0.1.0"
