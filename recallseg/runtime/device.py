"""Device, precision, seeding and distributed setup: one code path for CPU and CUDA."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from recallseg.config.schema import TRAINER, check_value
from recallseg.errors import ConfigError



@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def uses_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    check_value("trainer.device", name, TRAINER["device"])
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device", "is cuda but CUDA is not available", "use trainer.device=auto or cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA when supported, else fp16; off on CPU (CPU autocast is slower for convs)."""
    check_value("trainer.amp", mode, TRAINER["amp"])
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.amp", "fp16 needs CUDA", "use bf16 or off on CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def init_runtime(device: str = "auto", amp: str = "auto", channels_last: bool | str = "auto", deterministic: bool = False) -> Runtime:
    """Set up the device (and the process group when launched by torchrun).

    ``deterministic`` turns on ``torch.use_deterministic_algorithms`` and turns off cuDNN
    autotuning: bitwise-repeatable CUDA runs, at the cost of slower kernels (see README).
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend=backend)
    if channels_last == "auto":
        channels_last = torch_device.type == "cuda"
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    return Runtime(torch_device, resolve_amp(amp, torch_device), bool(channels_last), rank, world_size, local_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_target(masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of masks as the int64 class indices losses take, on ``device``.

    Masks cross the loader in their dataset's compact dtype (``data.masks``); widening after
    the copy moves an eighth of the bytes over PCIe. Both steps are asynchronous: no host sync.
    """
    return masks.to(device, non_blocking=True).long()
