"""Whether inference of the largest image fits the device's memory, checked before any work.

Inference memory grows with the pixels of an image. Past the device's memory CUDA raises, and
a CPU process is killed by the kernel without a word, both first met at a validation, hours
into a run. So before a run or an evaluation starts, the memory of one forward pass is
measured on two small probes and extrapolated, linearly in the pixels, to the largest image
and the configured inference (whole or slide, flip, scales). What is measured is a lower bound:
the tensors the network's ops create, counted while a tensor holds them; no kernel workspace
and no allocator slack. An estimate over the memory available is refused, with the way out
(``inference.mode=slide``).

A generous bound per pixel (``PRIOR``) first tells the images that fit by far, for which
nothing is measured.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from recallseg.errors import ConfigError
from recallseg.evaluation.inference import InferenceSettings, window_grid
from recallseg.pipeline.transforms import output_size

PRIOR = 16 * 1024  # bytes per input pixel of one forward pass; no network recallseg builds comes near
GIB = 2**30


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of the storages that the ops under it create, for as long as a tensor holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, list[int]] = {}  # address -> [bytes, tensors holding it]
        self.tensors: set[int] = set()
        self.live = self.peak = 0

    def hold(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if id(tensor) in self.tensors or address == 0:  # an in-place op hands back what it was given
            return
        entry = self.storages.get(address)
        if entry is None:
            entry = self.storages[address] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        self.tensors.add(id(tensor))
        weakref.finalize(tensor, self._release, id(tensor), address)

    def _release(self, ident: int, address: int) -> None:
        self.tensors.discard(ident)
        entry = self.storages.get(address)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:  # the last tensor viewing it is gone: the allocator has it back
                self.live -= entry[0]
                del self.storages[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self.hold(item)
        return out


def forward_peak(model: nn.Module, x: torch.Tensor, autocast: Callable[[], contextlib.AbstractContextManager]) -> tuple[int, int]:
    """``(peak bytes, output channels)`` of ``model(x)`` in evaluation mode: the most memory the tensors
    its ops create hold at once, plus ``x`` itself (kernel workspace and allocator slack not included)."""
    was_training = model.training
    counter = _LiveTensors()
    try:
        model.eval()
        with torch.no_grad(), autocast(), counter:
            output = model(x)
    finally:
        model.train(was_training)
    return counter.peak + x.untyped_storage().nbytes(), int(output.shape[1])


@dataclass(frozen=True)
class ForwardMemory:
    """Bytes of one forward pass at any pixel count: ``per_pixel * pixels + constant``; ``channels``: the logits'."""

    per_pixel: float
    constant: float = 0.0
    channels: int = 256

    @classmethod
    def measure(cls, model: nn.Module, device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager], multiple: int) -> "ForwardMemory":
        """From two probes of ``model`` (see the module docstring); measured once per model, device and multiple."""
        key = (str(device), int(multiple))
        known = _MEASURED.setdefault(model, {})
        if key not in known:
            known[key] = cls._probe(model, device, autocast, multiple)
        return known[key]

    @classmethod
    def _probe(cls, model: nn.Module, device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager], multiple: int) -> "ForwardMemory":
        side = max(int(multiple), 16) * 2
        probes = []
        for scale in (1, 2):
            x = torch.zeros(1, 3, side * scale, side * scale, device=device)
            probes.append((x.shape[-1] * x.shape[-2], *forward_peak(model, x, autocast)))
        (small, low, channels), (large, high, _) = probes
        per_pixel = max(high - low, 0) / (large - small)
        return cls(per_pixel, max(low - per_pixel * small, 0), channels)

    def __call__(self, pixels: float) -> float:
        return self.per_pixel * pixels + self.constant


_MEASURED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def inference_bytes(forward: ForwardMemory, settings: InferenceSettings, height: int, width: int) -> float:
    """A lower bound of the memory ``Inference(settings)`` needs for one ``height x width`` image."""
    copies = 2 if settings.flip else 1  # the mirrored image runs in the same pass
    largest = 0.0
    for scale in settings.scales:
        h, w = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
        if settings.mode == "whole":
            need = forward(copies * _padded(h, settings.size_multiple) * _padded(w, settings.size_multiple))
        else:
            crop_h, crop_w = min(settings.crop_size[0], h), min(settings.crop_size[1], w)
            windows = min(len(window_grid(h, w, (crop_h, crop_w), settings.stride)), max(settings.window_batch // copies, 1))
            window = _padded(crop_h, settings.size_multiple) * _padded(crop_w, settings.size_multiple)
            accumulators = 4 * h * w * (copies * (forward.channels + 3) + 1)  # the logits' sums and the images, one count map
            need = forward(copies * windows * window) + accumulators
        largest = max(largest, need)
    return largest


def available_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on ``device`` (None when it cannot tell)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    found = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """What the memory limit of this process's control group leaves (a batch job's limit, not the machine's)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for limit_file, usage_file, base in (
            ("memory.max", "memory.current", Path("/sys/fs/cgroup")),
            ("memory.limit_in_bytes", "memory.usage_in_bytes", Path("/sys/fs/cgroup/memory")),
        ):
            if (controllers == "" and limit_file == "memory.max") or "memory" in controllers.split(","):
                folder = base / path.lstrip("/")
                try:
                    limit = (folder / limit_file).read_text().strip()
                    usage = int((folder / usage_file).read_text())
                except (OSError, ValueError):
                    continue
                if limit.isdigit() and int(limit) < 2**60:
                    return max(int(limit) - usage, 0)
    return None


def _amount(size: float) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / 2**20:.0f} MiB"


def check_inference_memory(
    model: nn.Module, settings: InferenceSettings, sizes: Sequence[tuple[int, int]], device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext, what: str = "the largest image",
) -> None:
    """Refuse inference whose memory, for the largest of ``sizes`` (``(height, width)``), is over what ``device`` has."""
    if not sizes:
        return
    height, width = max(sizes, key=lambda size: size[0] * size[1])
    available = available_memory(device)
    if available is None:
        return
    if inference_bytes(ForwardMemory(PRIOR), settings, height, width) <= available:
        return
    need = inference_bytes(ForwardMemory.measure(model, device, autocast, settings.size_multiple), settings, height, width)
    if need <= available:
        return
    hint = (
        "use inference.mode=slide (windows of inference.crop_size, a few at a time)" if settings.mode == "whole"
        else "use a smaller inference.crop_size or inference.window_batch"
    )
    raise ConfigError(
        "inference.mode", f"{settings.mode} inference of {what} ({height}x{width}, HxW) needs at least {_amount(need)} on "
        f"{device}, which has {_amount(available)} available", hint + (", and fewer inference.scales or inference.flip=false" if len(settings.scales) > 1 or settings.flip else ""),
    )


def frame_sizes(dataset, transform=None) -> list[tuple[int, int]]:
    """``(height, width)`` of what the model sees of each frame of ``dataset`` after ``transform`` (file
    headers where the dataset has them); empty when the transform makes sizes no one can tell beforehand."""
    if len(dataset) == 0:
        return []
    if hasattr(dataset, "frame_shape"):
        sizes = {tuple(int(v) for v in dataset.frame_shape(index)) for index in range(len(dataset))}
    else:  # a generated dataset: its frames share a size
        sizes = {tuple(dataset.load(0)[0].shape[:2])}
    out = [output_size(transform, size) for size in sizes]
    return [] if any(size is None for size in out) else out  # type: ignore[misc]
