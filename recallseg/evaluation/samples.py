"""What evaluation feeds the model: transformed images next to the labels they are scored on.

Validation during training and ``evaluate.py`` build the same samples, from
``evaluation.full_resolution`` (default true). With it, the label file is scored at its own
resolution, whatever the dataset does on the way; with false, the mask as the dataset's
pipeline returns it:

- a dataset-level ``resize`` (e.g. Synthia's 768x384 protocol) or a resizing ``val_transform``
  changes the image the model sees, but the mask scored is the original one; the logits are
  resized to it (``evaluation.inference.resize_logits``). Only resizing val transforms make sense
  here: a crop would be scored against the uncropped label.
- no padding is added to the images: inference pads to the model's stride by itself and
  crops the logits back.

Images of different sizes in one batch are kept as lists (each is predicted on its own);
same-sized ones are stacked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from recallseg.data.base import SegmentationDataset
from recallseg.pipeline.cache import CachedDataset
from recallseg.data.files import image_size
from recallseg.pipeline.loaders import WorkerLoader, worker_context, worker_init
from recallseg.data.masks import to_mask_dtype

def unwrap(dataset: SegmentationDataset) -> SegmentationDataset:
    """The dataset that reads the files (the source of a ``CachedDataset``)."""
    return dataset.source if isinstance(dataset, CachedDataset) else dataset


def full_resolution_mask(dataset: SegmentationDataset, index: int, loaded_mask: np.ndarray) -> np.ndarray:
    """The train-id mask of sample ``index`` at the label file's resolution.

    ``loaded_mask`` is what ``dataset.load(index)`` returned; it is the answer unless the
    dataset resizes frames when loading (``resize``), in which case the label file is decoded
    again, unresized (all ``ignore_index`` at the image's size for splits without labels).
    """
    base = unwrap(dataset)
    if getattr(base, "resize", None) is None or not hasattr(base, "samples"):
        return loaded_mask
    sample = base.samples[index]
    if sample.label is None:
        return np.full(image_size(sample.image), base.ignore_index, dtype=base.mask_dtype())
    raw = base.read_raw_label(sample.label)
    base.check_raw_label(raw, sample.label)
    return base.decode_label(raw, sample.label)


def sample_names(dataset: SegmentationDataset) -> list[str]:
    """A unique, file-system friendly name per sample, for prediction files.

    File datasets: the image path relative to the deepest folder holding every image, without
    the extension (``frankfurt_000000_000019_leftImg8bit``, ``Stereo_Left/Omni_F/000000``).
    Others: the zero-padded index.
    """
    base = unwrap(dataset)
    samples = getattr(base, "samples", None)
    if not samples or not all(hasattr(sample, "image") for sample in samples):
        return [f"{index:06d}" for index in range(len(dataset))]
    paths = [Path(sample.image).resolve() for sample in samples]
    common = Path(os.path.commonpath([str(path.parent) for path in paths]))
    return [path.relative_to(common).with_suffix("").as_posix() for path in paths]


class EvaluationSamples(Dataset):
    """``dataset`` as dicts: ``image`` (after ``transform``), full-resolution ``mask``, ``index``.

    The mask keeps the dataset's compact ``mask_dtype()``; evaluation widens it on the device.

    Args:
        dataset: a recallseg dataset (its own ``transform`` is not used).
        transform: the albumentations-style evaluation transform, or None.
        full_resolution: score the label file's resolution (True) or the transformed mask (False).
        keep_image: also return the untransformed image as ``source_image`` (for overlays).
    """

    def __init__(self, dataset: SegmentationDataset, transform: Callable[..., dict] | None = None, full_resolution: bool = True, keep_image: bool = False):
        self.dataset = dataset
        self.transform = transform
        self.full_resolution = full_resolution
        self.keep_image = keep_image

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.dataset.load(index)
        target = full_resolution_mask(self.dataset, index, mask) if self.full_resolution else None
        model_image = image
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            model_image, mask = out["image"], out["mask"]
        sample = {
            "image": np.ascontiguousarray(model_image),
            "mask": to_mask_dtype(
                mask if target is None else target, self.dataset.num_classes, self.dataset.ignore_index, self.dataset.describe(index),
                self.dataset.mask_dtype(),
            ),
            "index": int(index),
        }
        if self.keep_image:
            sample["source_image"] = image
        return sample


def collate_evaluation(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-sized images and masks into tensors; keep lists of tensors when sizes differ."""

    def stack(key: str) -> torch.Tensor | list[torch.Tensor]:
        arrays = [torch.from_numpy(sample[key]) for sample in samples]
        if all(a.shape == arrays[0].shape for a in arrays):
            return torch.stack(arrays)
        return arrays

    batch = {"image": stack("image"), "mask": stack("mask"), "index": [sample["index"] for sample in samples]}
    if "source_image" in samples[0]:
        batch["source_image"] = [sample["source_image"] for sample in samples]
    return batch


def evaluation_loader(
    samples: EvaluationSamples, batch_size: int, num_workers: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> WorkerLoader:
    """Loader of ``collate_evaluation`` batches; with several ranks each takes a strided shard (no duplicates)."""
    indices = range(rank, len(samples), world_size) if world_size > 1 else None
    dataset = samples if indices is None else torch.utils.data.Subset(samples, indices)
    return WorkerLoader(
        dataset, batch_size=max(int(batch_size), 1), shuffle=False, num_workers=int(num_workers),
        pin_memory=pin_memory, collate_fn=collate_evaluation, worker_init_fn=worker_init,
        multiprocessing_context=worker_context(int(num_workers)),
    )  # fmt: skip


def evaluation_samples(
    dataset_cfg: Any, dataset: SegmentationDataset, full_resolution: bool, keep_image: bool = False, *, trusted: bool = True,
    named_by_user: frozenset[str] = frozenset(),
) -> EvaluationSamples:
    """What validation and evaluate.py score: ``dataset`` (built without a transform) through
    ``dataset.val_transform``, next to its labels. No padding is added: inference pads to the
    model's stride by itself and crops the logits back."""
    from recallseg.config.construct import resolved
    from recallseg.pipeline.transforms import build_transform

    transform = build_transform(
        resolved(dataset_cfg).get("val_transform"), ignore_index=dataset.ignore_index, where="dataset.val_transform", trusted=trusted,
        named_by_user=named_by_user,
    )  # fmt: skip
    return EvaluationSamples(dataset, transform, full_resolution=full_resolution, keep_image=keep_image)
