"""The loss registry: a name in ``configs/loss/<name>.yaml`` maps to a class registered here.

Adding a loss takes one Python module that decorates its class with ``@register_loss("name")``
and one YAML file with ``name: <name>`` plus the constructor's keyword arguments. The trainer
only ever calls ``build_loss(cfg.loss, context)``. A loss that needs more than the number of
classes and the ignore index (class statistics of the training split, say) overrides
``from_config`` and asks the ``LossContext`` for it, so the trainer never special-cases a loss.

Users register their own losses from Python before training::

    from recallseg.losses import register_loss, SegmentationLoss

    @register_loss("my_loss")
    class MyLoss(SegmentationLoss): ...

and list the module in ``imports: [my_package.my_losses]`` to use it from the command line.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

LOSSES: dict[str, type["SegmentationLoss"]] = {}


@dataclass
class LossContext:
    """What the trainer knows that a loss may need."""

    num_classes: int
    ignore_index: int = 255
    # Returns per-class pixel counts of the *training* split (computed once and cached).
    class_pixel_counts: Callable[[], torch.Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class SegmentationLoss(nn.Module):
    """Base class of recallseg losses: ``loss(logits[N,C,H,W], target[N,H,W]) -> scalar``."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: LossContext) -> "SegmentationLoss":
        """Build from the YAML options; override to pull extra inputs from ``context``."""
        return cls(num_classes=context.num_classes, ignore_index=context.ignore_index, **dict(options))

    def extra_logs(self) -> dict[str, torch.Tensor]:
        """Detached tensors the trainer logs at log intervals (e.g. per-class weights). Never synced per step."""
        return {}


def register_loss(name: str) -> Callable[[type[SegmentationLoss]], type[SegmentationLoss]]:
    """Class decorator that makes a loss available as ``loss=<name>``."""

    def decorator(cls: type[SegmentationLoss]) -> type[SegmentationLoss]:
        if name in LOSSES and LOSSES[name] is not cls:
            raise ValueError(f"a loss named {name!r} is already registered ({LOSSES[name].__module__}.{LOSSES[name].__name__})")
        LOSSES[name] = cls
        return cls

    return decorator


def build_loss(cfg: Mapping[str, Any], context: LossContext) -> SegmentationLoss:
    """Build the loss described by ``cfg`` (``{"name": ..., **options}``)."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in LOSSES:
        raise KeyError(
            f"unknown loss {name!r}; registered losses: {sorted(LOSSES)}. "
            "Register your own with recallseg.losses.register_loss and list its module in `imports`."
        )
    cls = LOSSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in options if k not in accepted and not takes_kwargs]
    if unknown and cls.from_config.__func__ is SegmentationLoss.from_config.__func__:
        raise TypeError(f"loss {name!r} does not take option(s) {unknown}; it takes {[k for k in accepted if k != 'self']}")
    return cls.from_config(options, context)
