"""Optimizer and per-iteration learning-rate schedule from config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from recallseg.config.construct import Trust, accepted_options, build, check_untrusted_text, locate, resolved
from recallseg.errors import ConfigError


def build_optimizer(
    cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter], device: torch.device, capturable: bool = False, trust: Trust = Trust()
) -> torch.optim.Optimizer:
    """Instantiate ``cfg._target_`` (e.g. torch.optim.AdamW) with the remaining keys.

    On CUDA the fused implementation is used when the optimizer has one: one kernel for
    the whole update, and it takes the GradScaler's inf check without a host sync.
    ``capturable`` prepares it for CUDA-graph capture: the learning rate lives in a device
    tensor (the scheduler fills it between replays) and the step counts stay on the device.
    """
    section = dict(resolved(cfg))
    if not trust.trusted:  # as text, before anything it names is imported
        check_untrusted_text(section, "optimizer", trust.named_by_user)
    accepted, _ = accepted_options(locate(section.get("_target_"), "optimizer._target_"))
    if device.type == "cuda" and "fused" in accepted and "fused" not in section:
        section["fused"] = True
    if capturable:
        if "capturable" in accepted:
            section["capturable"] = True
        base_lr = float(section["lr"])
        section["lr"] = torch.tensor(base_lr, device=device)
        optimizer = build(section, "optimizer", kind=torch.optim.Optimizer, **trust.build, params=params)
        for group in optimizer.param_groups:
            group["initial_lr"] = base_lr  # a float base: the scheduler then fills the tensor without a sync
        return optimizer
    return build(section, "optimizer", kind=torch.optim.Optimizer, **trust.build, params=params)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first group's learning rate as a float (reads the device tensor under CUDA graphs)."""
    return float(optimizer.param_groups[0]["lr"])


@dataclass
class PolySchedule:
    """``(1 - it / max_iters) ** power``, floored at ``min_factor``, after an optional linear warmup
    from ``warmup_ratio`` to 1 over ``warmup_iters`` iterations."""

    power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    min_factor: float = 0.0

    def __post_init__(self):
        # Written so that NaN, which fails every comparison, fails them.
        if not (0 <= self.power < math.inf and self.warmup_iters >= 0 and 0 <= self.warmup_ratio <= 1 and 0 <= self.min_factor <= 1):
            raise ConfigError("scheduler", f"power and warmup_iters must be >= 0 and finite, warmup_ratio and min_factor in [0, 1]; got {self}", "fix the scheduler options")

    def decay(self, iteration: int, max_iters: int) -> float:
        return max((1.0 - iteration / max_iters) ** self.power, self.min_factor) if iteration < max_iters else self.min_factor

    def factor(self, iteration: int, max_iters: int) -> float:
        """Multiplier of the base learning rate at ``iteration`` (0-based, before its step)."""
        factor = self.decay(iteration, max_iters)
        if self.warmup_iters > 0 and iteration < self.warmup_iters:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters
        return factor


@dataclass
class ConstantSchedule(PolySchedule):
    """The base learning rate throughout (after the optional warmup)."""

    def decay(self, iteration: int, max_iters: int) -> float:
        return 1.0


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, max_iters: int, trust: Trust = Trust()) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration, following the schedule ``cfg`` names (one of the
    schedules here, when it comes from a checkpoint)."""
    schedule = build(cfg, "scheduler", kind=PolySchedule, **trust.build)
    # A function, not the schedule object: LambdaLR would save an object's fields in its state
    # and a resume would bring back the old schedule's options.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda iteration: schedule.factor(iteration, max_iters))
