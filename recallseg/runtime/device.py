"""Device, precision, seeding and distributed setup: one code path for CPU and CUDA."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

AMP_MODES = ("auto", "bf16", "fp16", "off")


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
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but CUDA is not available; use trainer.device=auto or cpu")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"trainer.device must be auto, cpu or cuda, got {name!r}")


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA when supported, else fp16; off on CPU (CPU autocast is slower for convs)."""
    if mode not in AMP_MODES:
        raise ValueError(f"trainer.amp must be one of {AMP_MODES}, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("trainer.amp=fp16 needs CUDA; use bf16 or off on CPU")
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


class Normalizer:
    """Turns a uint8 ``[N, H, W, 3]`` RGB batch into the normalised float ``[N, 3, H, W]`` the network takes, on the device.

    ``channel_order="bgr"`` hands the network the channels in B, G, R order (a network trained on
    OpenCV-decoded images, as the paper's Synthia code does); ``mean`` and ``std`` are then in
    that order too (fractions of 255). The permute makes a channels-last view for free;
    ``.contiguous()`` is only paid when the model runs channels-first.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], runtime: Runtime, channel_order: str = "rgb"):
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"model.channel_order must be rgb or bgr, got {channel_order!r}")
        self.runtime = runtime
        self.channel_order = channel_order
        mean_t = torch.tensor(mean, dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1) * 255.0
        std_t = torch.tensor(std, dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1) * 255.0
        self.scale = 1.0 / std_t
        self.shift = -mean_t / std_t

    @classmethod
    def for_model(cls, model_cfg: Any, runtime: Runtime) -> "Normalizer":
        """The normaliser a ``model`` config section describes (``mean``, ``std``, ``channel_order``)."""
        get = model_cfg.get
        return cls(get("mean"), get("std"), runtime, get("channel_order", "rgb") or "rgb")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.runtime.device, non_blocking=True).permute(0, 3, 1, 2)
        if self.channel_order == "bgr":
            x = x.flip(1)
        x = torch.addcmul(self.shift, x.float(), self.scale)
        if self.runtime.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()
