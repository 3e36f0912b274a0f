"""The ``inference`` section: images/s of whole-image vs sliding-window inference and flip /
multi-scale TTA, through the same ``Inference`` that evaluation uses (random weights, 19 classes).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import nn

from recallseg.evaluation.inference import Inference, InferenceSettings


def inference_rows(size: tuple[int, int]) -> list[tuple[str, dict]]:
    """The usual Cityscapes setting scaled to the image: 1024x2048 frames, 512x1024 windows every
    341x682 pixels (3 x 3 windows, 4.5x the pixels of the whole frame)."""
    height, width = size
    crop = (height // 2, width // 2)
    stride = (crop[0] * 2 // 3, crop[1] * 2 // 3)
    return [
        ("whole", {"mode": "whole"}),
        ("slide", {"mode": "slide", "crop_size": crop, "stride": stride}),
        ("whole + flip", {"mode": "whole", "flip": True}),
        ("whole + flip + 3 scales", {"mode": "whole", "flip": True, "scales": [0.75, 1.0, 1.25]}),
    ]


@torch.no_grad()
def benchmark_inference(
    model: nn.Module,
    shape: Sequence[int],
    mode: str = "whole",
    batch_size: int = 1,
    iterations: int = 5,
    warmup: int = 1,
    device: str | torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Images per second of ``model`` on random ``[batch_size, 3, H, W]`` inputs (``shape`` = ``(H, W)``).

    ``settings`` are further :class:`InferenceSettings` (crop_size, stride, flip, scales...).
    Synchronises the device only around the timed loop. Returns the settings and the timing.
    """
    height, width = int(shape[0]), int(shape[1])
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    infer = Inference(InferenceSettings(mode=mode, **settings))
    x = torch.randn(batch_size, 3, height, width, device=device)
    if channels_last:  # as the runtime's Normalizer hands batches to a channels-last model
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        if amp_dtype is not None:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                infer(model, x)
        else:
            infer(model, x)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        run()
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        run()
    sync()
    seconds = time.perf_counter() - start
    return {
        **infer.settings.as_dict(),
        "height": height,
        "width": width,
        "batch_size": batch_size,
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "off",
        "seconds_per_image": seconds / (iterations * batch_size),
        "images_per_second": iterations * batch_size / seconds,
    }


def inference_section(device: torch.device, args) -> list[dict]:
    from recallseg.runtime.device import resolve_amp
    from recallseg.models import build_model

    amp = resolve_amp(args.amp, device)
    model = build_model({"_target_": "segmentation_models_pytorch.create_model", "arch": "DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": None, "encoder_output_stride": 16}, 19)
    model = model.to(device).eval()
    channels_last = device.type == "cuda"  # what the runtime does on CUDA
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    size = args.inference_size or ([1024, 2048] if device.type == "cuda" else [512, 1024])
    results = []
    print(f"{'inference':<26} {'images/s':>9} {'s/image':>9}   ({size[0]}x{size[1]}, batch 1, {device}, amp {amp or 'off'})")
    for name, settings in inference_rows(tuple(size)):
        result = benchmark_inference(
            model, size, batch_size=1, iterations=args.inference_iterations, warmup=1, device=device, amp_dtype=amp, channels_last=channels_last, **settings,
        )  # fmt: skip
        result["name"] = name
        results.append(result)
        print(f"{name:<26} {result['images_per_second']:>9.2f} {result['seconds_per_image']:>9.3f}", flush=True)
    return results
