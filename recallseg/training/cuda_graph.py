"""Replay the whole optimisation step as one CUDA graph (``trainer.cuda_graph=true``).

At the shapes of the paper a DeepLabV3+ ResNet18 step launches hundreds of small kernels;
replaying them as one graph removes the launch overhead (on an H100 the recall-loss step goes
from ~425 to ~610 images/s, see README). The step must then be static: same batch shape,
no host synchronisation, no Python-side decisions. So the trainer allows it only on one CUDA
device, without the fp16 GradScaler or the skip policy for non-finite steps, and with the
optimizer's learning rate held in a device tensor that the scheduler fills between replays.
"""

from __future__ import annotations

from typing import Callable

import torch


class GraphedStep:
    """Calls ``step(images, masks) -> loss`` eagerly ``warmup`` times on a side stream (lazy
    initialisation and cuDNN autotuning must happen outside a capture), captures the next call
    and replays it from then on. Each call is one real training step: the captured call is
    replayed right after capture, so the sequence of updates is the eager one.

    The static mask buffer keeps the loader's compact dtype (uint8 for the built-in datasets):
    a replay copies only those bytes in, and ``step`` widens them to int64 inside the graph
    (``runtime.to_target``), so the loss still gets class indices with no host sync."""

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device, warmup: int = 3):
        self.step, self.device, self.warmup = step, device, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            if images.shape != self.static_images.shape or masks.shape != self.static_masks.shape:
                raise ValueError(
                    f"trainer.cuda_graph needs batches of one shape; got images {tuple(images.shape)} after capturing "
                    f"{tuple(self.static_images.shape)}. Use fixed-size crops or trainer.cuda_graph=false."
                )
            if masks.dtype != self.static_masks.dtype:  # copy_ would convert on the way, off the fast path
                raise ValueError(
                    f"trainer.cuda_graph needs masks of one dtype; got {masks.dtype} after capturing {self.static_masks.dtype}. "
                    "Make the dataset return masks in its mask_dtype(), or set trainer.cuda_graph=false."
                )
            self.static_images.copy_(images, non_blocking=True)
            self.static_masks.copy_(masks, non_blocking=True)
            self.graph.replay()
            return self.static_loss
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        if self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                loss = self.step(images, masks)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return loss
        self.static_images, self.static_masks = images.clone(), masks.clone()
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread may allocate while we capture.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_loss = self.step(self.static_images, self.static_masks)
        self.graph.replay()
        return self.static_loss


def check_graph_support(runtime, nonfinite: str, optimizer_target: str) -> None:
    """Refuse settings the captured step cannot honour, with what to change."""
    problems = []
    if runtime.device.type != "cuda":
        problems.append("it needs CUDA (trainer.device=cuda)")
    if runtime.distributed:
        problems.append("it does not support several processes (torchrun)")
    if runtime.uses_grad_scaler:
        problems.append("fp16 needs the GradScaler, which cannot be captured: use trainer.amp=bf16 or off")
    if nonfinite != "stop":
        problems.append("trainer.nonfinite=skip needs the GradScaler: use trainer.nonfinite=stop")
    if optimizer_target.rsplit(".", 1)[-1] not in ("Adam", "AdamW", "SGD"):
        problems.append(f"optimizer {optimizer_target} is not known to be capturable: use adam, adamw or sgd")
    if problems:
        from recallseg.errors import ConfigError

        raise ConfigError("trainer.cuda_graph", "true is not possible here: " + ", and ".join(problems), "set trainer.cuda_graph=false")
