"""Optimizer and per-iteration learning-rate schedule from config."""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf


def build_optimizer(
    cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter], device: torch.device, capturable: bool = False
) -> torch.optim.Optimizer:
    """Instantiate ``cfg._target_`` (e.g. torch.optim.AdamW) with the remaining keys.

    On CUDA the fused implementation is used when the optimizer has one: one kernel for
    the whole update, and it takes the GradScaler's inf check without a host sync.
    ``capturable`` prepares it for CUDA-graph capture: the learning rate lives in a device
    tensor (the scheduler fills it between replays) and the step counts stay on the device.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    options = dict(cfg)
    cls = get_class(options.pop("_target_"))
    accepted = inspect.signature(cls).parameters
    if device.type == "cuda" and "fused" in accepted and "fused" not in options:
        options["fused"] = True
    if capturable:
        if "capturable" in accepted:
            options["capturable"] = True
        base_lr = float(options["lr"])
        options["lr"] = torch.tensor(base_lr, device=device)
        optimizer = cls(params, **options)
        for group in optimizer.param_groups:
            group["initial_lr"] = base_lr  # a float base: the scheduler then fills the tensor without a sync
        return optimizer
    return cls(params, **options)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first group's learning rate as a float (reads the device tensor under CUDA graphs)."""
    return float(optimizer.param_groups[0]["lr"])


def lr_factor(iteration: int, max_iters: int, name: str, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1, min_factor: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based, before its step).

    ``poly``: ``(1 - it / max_iters) ** power``, floored at ``min_factor``; ``constant``: 1.
    A linear warmup from ``warmup_ratio`` to 1 over ``warmup_iters`` multiplies either.
    """
    if name == "poly":
        factor = max((1.0 - iteration / max_iters) ** power, min_factor) if iteration < max_iters else min_factor
    elif name == "constant":
        factor = 1.0
    else:
        raise ValueError(f"scheduler.name must be poly or constant, got {name!r}")
    if warmup_iters > 0 and iteration < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    return factor


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, max_iters: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    options = dict(cfg)
    name = options.pop("name")
    lr_factor(0, max_iters, name, **options)  # validate the options now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, max_iters, name, **options))
