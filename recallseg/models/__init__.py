"""Models: any segmentation-models-pytorch architecture, or your own, chosen by config."""

from recallseg.models.builder import build_model

__all__ = ["build_model"]
