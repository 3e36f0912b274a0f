"""Images per second of whole-image vs sliding-window inference (and TTA), on random inputs.

    python scripts/benchmark_inference.py                          # the default model, 512x1024, CPU or CUDA
    python scripts/benchmark_inference.py --size 1024 2048 --device cuda --amp bf16 --iterations 20
    python scripts/benchmark_inference.py --json results.json

The model is the paper's DeepLabV3+ / ResNet18 (``configs/model``) with 19 classes and random
weights: speed does not depend on the weights. Sliding windows are half the image's height
and width, every two thirds of a window (as 512x1024 windows on 1024x2048 Cityscapes frames). Each row is one ``InferenceSettings``;
``recallseg.engine.inference.benchmark_inference`` does the timing (used by scripts/benchmark.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rows(size: tuple[int, int]) -> list[tuple[str, dict]]:
    # The usual Cityscapes setting scaled to the image: 1024x2048 frames, 512x1024 windows
    # every 341x682 pixels (3 x 3 windows, 4.5x the pixels of the whole frame).
    height, width = size
    crop = (height // 2, width // 2)
    stride = (crop[0] * 2 // 3, crop[1] * 2 // 3)
    return [
        ("whole", {"mode": "whole"}),
        ("slide", {"mode": "slide", "crop_size": crop, "stride": stride}),
        ("whole + flip", {"mode": "whole", "flip": True}),
        ("whole + flip + 3 scales", {"mode": "whole", "flip": True, "scales": [0.75, 1.0, 1.25]}),
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    from recallseg.engine.inference import benchmark_inference
    from recallseg.engine.runtime import resolve_amp, resolve_device
    from recallseg.models import build_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", help="auto | bf16 | fp16 | off (auto: bf16/fp16 on CUDA, off on CPU)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows (whole, slide, ...)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    amp = resolve_amp(args.amp, device)
    model = build_model({"arch": "DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": None, "encoder_output_stride": 16}, 19)
    model = model.to(device).eval()
    channels_last = device.type == "cuda"  # what the runtime does on CUDA
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    results = []
    print(f"{'inference':<26} {'images/s':>9} {'s/image':>9}   ({args.size[0]}x{args.size[1]}, batch {args.batch_size}, {device}, amp {amp or 'off'})")
    for name, settings in rows(tuple(args.size)):
        if args.only and name not in args.only:
            continue
        result = benchmark_inference(
            model, args.size, batch_size=args.batch_size, iterations=args.iterations, warmup=args.warmup, device=device, amp_dtype=amp,
            channels_last=channels_last, **settings,
        )
        result["name"] = name
        results.append(result)
        print(f"{name:<26} {result['images_per_second']:>9.2f} {result['seconds_per_image']:>9.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
