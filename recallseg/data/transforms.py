"""albumentations pipelines built from Hydra config.

A pipeline is a list of transform specs, each a mapping with ``_target_`` (any
albumentations transform, or a recallseg one) and its keyword arguments, e.g.::

    train_transform:
      - {_target_: albumentations.HorizontalFlip, p: 0.5}

Images stay uint8: normalisation happens on the device, after the batch is transferred.
"""

from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf


def build_transform(specs: Sequence[Any] | None) -> A.Compose | None:
    """Compose the transform specs into one albumentations pipeline (None for no transform)."""
    if specs is None:
        return None
    if isinstance(specs, (DictConfig, ListConfig)):
        specs = OmegaConf.to_container(specs, resolve=True)
    if len(specs) == 0:
        return None
    transforms = [spec if callable(spec) else instantiate(spec) for spec in specs]
    return A.Compose(transforms)
