"""albumentations pipelines built from Hydra config.

A pipeline is a list of transform specs, each a mapping with ``_target_`` (any
albumentations transform, or a recallseg one) and its keyword arguments, e.g.::

    train_transform:
      - {_target_: recallseg.pipeline.transforms.RandomScaleCrop, height: 768, width: 768, scale: [0.75, 2.0]}
      - {_target_: albumentations.HorizontalFlip, p: 0.5}
      - {_target_: albumentations.ColorJitter, brightness: 0.25, contrast: 0.25, saturation: 0.25, hue: 0.0}

Images stay uint8: normalisation happens on the device, after the batch is transferred.

The model needs frames whose sides are multiples of its output stride (32 for smp's
DeepLabV3+ and most encoders). ``build_transform(..., size_divisor=32)`` checks this:

- a crop or resize to a fixed size that is not a multiple is rejected with a message naming
  the transform and the nearest valid sizes;
- a pipeline whose output size depends on the frame (none, flips, random scale...) gets a
  final ``pad_to_multiple`` that pads the image with 0 and the mask with the ignore index;
- a transform that pads the mask with anything but the ignore index is rejected (padded pixels
  would be trained as a class).

A training crop given no size (``height``/``width``) crops to ``dataset.crop``, by default the
training images' own size (``with_crop``; the builder works it out).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import albumentations as A
import cv2
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from recallseg.config.construct import accepted_options, build, locate
from recallseg.errors import ConfigError

# Transforms whose output size depends on the input (a fixed size before them is lost).
VARIABLE_SIZE = ("RandomScale", "LongestMaxSize", "SmallestMaxSize", "RandomSizedBBoxSafeCrop", "BBoxSafeRandomCrop", "CropAndPad", "Pad")


def build_transform(
    specs: Sequence[Any] | None, size_divisor: int | None = None, ignore_index: int | None = None, where: str = "transform",
    trusted: bool = True, named_by_user: frozenset[str] = frozenset(),
) -> A.Compose | None:
    """Compose the transform specs into one albumentations pipeline (None for no transform).

    With ``size_divisor``, output sizes are checked (see the module docstring): a variable
    output size gets a final ``pad_to_multiple(size_divisor, ignore_index)``. With
    ``ignore_index``, transforms that pad the mask with another value are rejected. ``where``
    names the pipeline in error messages (e.g. ``dataset.train_transform``).
    """
    if isinstance(specs, (DictConfig, ListConfig)):
        specs = OmegaConf.to_container(specs, resolve=True)
    if specs is not None and not isinstance(specs, (list, tuple)):
        raise ConfigError(where, f"must be a list of transforms ({{_target_: albumentations.X, ...}}) or null, got {specs!r}")
    transforms = [
        spec if callable(spec) else build(spec, f"{where}[{i}]", kind=(A.BasicTransform, A.BaseCompose), trusted=trusted, named_by_user=named_by_user)
        for i, spec in enumerate(specs or [])
    ]
    if ignore_index is not None:
        check_mask_fill(transforms, ignore_index, where)
    if size_divisor is not None:
        state = check_output_size(transforms, size_divisor, where)
        if state == "variable":
            transforms.append(pad_to_multiple(size_divisor, ignore_index=255 if ignore_index is None else ignore_index))
    if not transforms:
        return None
    return A.Compose(transforms)


def with_crop(specs: Sequence[Any] | None, crop: Callable[[], tuple[int, int]]) -> list[Any] | None:
    """``specs`` where each transform that takes ``height`` and ``width`` and is given neither (nor a
    ``size``) gets ``crop()`` (``dataset.crop``), asked for only when one needs it."""
    if isinstance(specs, (DictConfig, ListConfig)):
        specs = OmegaConf.to_container(specs, resolve=True)
    if not isinstance(specs, (list, tuple)):
        return specs
    filled = []
    for spec in specs:
        if isinstance(spec, Mapping) and "_target_" in spec and not {"height", "width", "size"} & set(spec):
            names, _ = accepted_options(locate(spec["_target_"], "_target_"))
            if {"height", "width"} <= names:
                height, width = crop()
                spec = {**spec, "height": height, "width": width}
        filled.append(spec)
    return filled


def _sizes(transform: Any) -> tuple[int, int] | None:
    """The fixed output ``(height, width)`` of a crop/resize transform, or None."""
    if isinstance(getattr(transform, "size", None), (tuple, list)) and len(transform.size) == 2:
        return int(transform.size[0]), int(transform.size[1])
    height, width = getattr(transform, "height", None), getattr(transform, "width", None)
    if isinstance(height, int) and isinstance(width, int):
        return height, width
    return None


def output_size(transform: Any, size: tuple[int, int]) -> tuple[int, int] | None:
    """The ``(height, width)`` a pipeline makes of a ``size`` frame, or None when it varies (random scales,
    resizes to a longest side)."""
    for item in list(getattr(transform, "transforms", [])) if transform is not None else []:
        name = type(item).__name__
        if isinstance(item, A.BaseCompose):
            inner = output_size(item, size)
            if inner is None or (not isinstance(item, A.Sequential) and inner != size):
                return None  # a random choice between pipelines of different sizes
            size = inner
        elif _sizes(item) is not None:
            size = _sizes(item)
        elif isinstance(item, A.PadIfNeeded):
            size = tuple(_padded(side, getattr(item, f"min_{axis}"), getattr(item, f"pad_{axis}_divisor")) for side, axis in zip(size, ("height", "width")))
        elif name in VARIABLE_SIZE or (name == "Affine" and getattr(item, "fit_output", False)):
            return None
    return size


def _padded(side: int, minimum: int | None, divisor: int | None) -> int:
    side = max(side, minimum or 0)
    return -(-side // divisor) * divisor if divisor else side


def _nearest_multiples(value: int, divisor: int) -> str:
    lower, upper = (value // divisor) * divisor, (value // divisor + 1) * divisor
    return f"{lower} or {upper}" if lower > 0 else str(upper)


def check_output_size(transforms: Sequence[Any], size_divisor: int, where: str = "transform") -> str:
    """Check that the pipeline's output sides are multiples of ``size_divisor``.

    Returns ``"fixed"`` (a fixed, valid size), ``"divisible"`` (padded to a multiple) or
    ``"variable"`` (depends on the input frame). Raises ValueError for a fixed invalid size.
    """
    if size_divisor <= 0:
        raise ValueError(f"size_divisor must be positive, got {size_divisor}")
    state = "variable"
    for transform in transforms:
        name = type(transform).__name__
        if isinstance(transform, A.BaseCompose):  # OneOf, SomeOf, Sequential...
            inner = check_output_size(list(transform.transforms), size_divisor, where)
            state = inner if isinstance(transform, A.Sequential) or inner == state else "variable"
            continue
        if isinstance(transform, A.PadIfNeeded):
            divisors = (transform.pad_height_divisor, transform.pad_width_divisor)
            if all(d is not None and d % size_divisor == 0 for d in divisors):
                state = "divisible"
            elif transform.min_height is not None and transform.min_width is not None:
                state = "variable"  # at least min size: still depends on the frame
            continue
        sizes = _sizes(transform)
        if sizes is not None:
            height, width = sizes
            if height % size_divisor or width % size_divisor:
                raise ConfigError(
                    where, f"{name} makes {height}x{width} (HxW) frames, but the model needs sides divisible by "
                    f"{size_divisor} (its output stride)", f"use height {_nearest_multiples(height, size_divisor)} and "
                    f"width {_nearest_multiples(width, size_divisor)}"
                )
            state = "fixed"
            continue
        if name in VARIABLE_SIZE or (name == "Affine" and getattr(transform, "fit_output", False)):
            state = "variable"
    return state


def check_mask_fill(transforms: Sequence[Any], ignore_index: int, where: str = "transform") -> None:
    """Reject transforms that pad the mask with a value other than ``ignore_index``."""
    for transform in transforms:
        if isinstance(transform, A.BaseCompose):
            check_mask_fill(list(transform.transforms), ignore_index, where)
            continue
        if not hasattr(transform, "fill_mask"):
            continue
        pads = getattr(transform, "border_mode", cv2.BORDER_CONSTANT) == cv2.BORDER_CONSTANT
        if hasattr(transform, "pad_if_needed"):
            pads = pads and transform.pad_if_needed
        fill = transform.fill_mask
        if pads and (np.ndim(fill) != 0 or float(fill) != float(ignore_index)):
            raise ConfigError(
                where, f"{type(transform).__name__} pads the mask with {fill}, but the dataset ignores {ignore_index}",
                f"set fill_mask: {ignore_index} so padded pixels take no part in the loss"
            )


def pad_to_multiple(divisor: int = 32, ignore_index: int = 255, fill: int = 0) -> A.PadIfNeeded:
    """Pad bottom/right so both sides are multiples of ``divisor``; the mask is padded with ``ignore_index``."""
    return A.PadIfNeeded(
        min_height=None, min_width=None, pad_height_divisor=divisor, pad_width_divisor=divisor,
        position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=fill, fill_mask=ignore_index,
    )  # fmt: skip


class RandomScaleCrop(A.DualTransform):
    """Random scale, then a random crop that pads where the scaled frame is smaller.

    Equivalent to ``RandomScale`` + ``RandomCrop(pad_if_needed=True)``, but only the source
    pixels under the crop window are resized, straight to the output (a 2x scaled 2048x1024
    Cityscapes frame would be 8 M pixels to compute and throw most away), which keeps it fast.

    Args:
        height, width: output size.
        scale: ``[min, max]`` scale factor, drawn uniformly.
        scales: a list of scale factors to draw one from, with equal chances, instead of
            ``scale`` (the paper's code: 0.75, 1.0, 1.25, 1.5, 1.75, 2.0).
        fill: image padding value; ``fill_mask``: mask padding value (the ignore index).

    Always applied (the output size must not depend on chance); ``scale: [1, 1]`` only crops.
    """

    def __init__(
        self, height: int, width: int, scale: Sequence[float] = (0.75, 2.0), fill: int = 0, fill_mask: int = 255,
        scales: Sequence[float] | None = None,
    ):
        super().__init__(p=1.0)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ConfigError("RandomScaleCrop.scale", f"must be [min, max] with 0 < min <= max, got {list(scale)}", "fix it in the transform's section")
        if scales is not None and (len(scales) == 0 or min(float(v) for v in scales) <= 0):
            raise ConfigError("RandomScaleCrop.scales", f"must be a non-empty list of positive factors, got {list(scales)}", "fix it in the transform's section")
        self.height, self.width = int(height), int(width)
        self.scale = (float(scale[0]), float(scale[1]))
        self.scales = None if scales is None else tuple(float(v) for v in scales)
        self.fill, self.fill_mask = fill, fill_mask
        self.border_mode = cv2.BORDER_CONSTANT

    def _axis(self, size: int, out: int, scale: float) -> tuple[slice, slice]:
        """Source and output intervals of one axis: the scaled frame (``size * scale`` long) is
        placed at a random offset; where it is shorter than ``out`` the rest is padding."""
        scaled = max(int(round(size * scale)), 1)
        offset = self.py_random.randint(0, scaled - out) if scaled >= out else -self.py_random.randint(0, out - scaled)
        out_start, out_stop = max(-offset, 0), min(scaled - offset, out)
        src_start = int(np.floor((offset + out_start) / scale))
        src_stop = min(max(int(np.ceil((offset + out_stop) / scale)), src_start + 1), size)
        return slice(src_start, src_stop), slice(out_start, out_stop)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image_height, image_width = params["shape"][:2]
        scale = self.py_random.choice(self.scales) if self.scales is not None else self.py_random.uniform(*self.scale)
        src_rows, out_rows = self._axis(image_height, self.height, scale)
        src_cols, out_cols = self._axis(image_width, self.width, scale)
        return {"source": (src_rows, src_cols), "target": (out_rows, out_cols), "scale": scale}

    def _apply(self, array: np.ndarray, source, target, interpolation: int, fill: Any) -> np.ndarray:
        rows, cols = target
        size = (cols.stop - cols.start, rows.stop - rows.start)
        resized = cv2.resize(array[source], size, interpolation=interpolation)
        if size == (self.width, self.height):
            return resized
        canvas = np.full((self.height, self.width, *array.shape[2:]), fill, dtype=resized.dtype)
        canvas[rows, cols] = resized.reshape(canvas[rows, cols].shape)
        return canvas

    def apply(self, img: np.ndarray, source, target, **params: Any) -> np.ndarray:
        return self._apply(img, source, target, cv2.INTER_LINEAR, self.fill)

    def apply_to_mask(self, mask: np.ndarray, source, target, **params: Any) -> np.ndarray:
        return self._apply(mask, source, target, cv2.INTER_NEAREST, self.fill_mask)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "scale", "fill", "fill_mask", "scales")
