"""recallseg's benchmark harness: training-step speed per loss, plus the data and inference benchmarks.

    python scripts/benchmark.py                                   # CPU-sized defaults
    python scripts/benchmark.py --device cuda --shape 384 768 --batch 8 --classes 16 \\
        --losses ce,recall,authors_recall_reference --modes fp32,bf16_cl,bf16_cl_graph
    python scripts/benchmark.py --sections train,data,eval --json outputs/benchmark.json

Section `train` times one full training step (device-side normalisation of a uint8 batch,
DeepLabV3+ ResNet18 at output stride 16 forward, loss, backward, AdamW step) on in-memory
tensors, for each loss and each mode:

- `fp32`: full precision, channels-first, eager;
- `bf16_cl`: bf16 autocast + channels_last, eager (recallseg's default on CUDA);
- `bf16_cl_graph`: the same with the whole step captured in one CUDA graph, fused capturable AdamW;
- `bf16_cl_compile`: the same, model under torch.compile (default mode).

Losses `ce_triton` and `recall_triton` are CE and recall loss with `kernel: triton`: one fused
Triton pass over the logits for the forward and one for the backward (CUDA only).

Sections `data` and `eval` run scripts/benchmark_data.py and scripts/benchmark_inference.py
(when present) and fold their JSON into this one. Shared machines vary by about +-15%:
compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from recallseg.engine.runtime import Normalizer, Runtime  # noqa: E402
from recallseg.losses import LossContext, build_loss  # noqa: E402
from recallseg.losses.fused_statistics import triton_available  # noqa: E402
from recallseg.models import build_model  # noqa: E402

MODES = {
    "fp32": dict(amp=None, channels_last=False, graph=False, compile=False),
    "bf16_cl": dict(amp=torch.bfloat16, channels_last=True, graph=False, compile=False),
    "bf16_cl_graph": dict(amp=torch.bfloat16, channels_last=True, graph=True, compile=False),
    "bf16_cl_compile": dict(amp=torch.bfloat16, channels_last=True, graph=False, compile=True),
}


def make_loss(name: str, num_classes: int):
    if name == "authors_recall_reference":  # re-creation of the paper code's behaviour, for comparison only
        from benchmark_losses import AuthorsRecallLossReference

        return AuthorsRecallLossReference(num_classes)
    from benchmark_losses import CONFIGS

    counts = torch.arange(num_classes, 0, -1) * 1000
    return build_loss(CONFIGS.get(name, {"name": name}), LossContext(num_classes, 255, class_pixel_counts=lambda: counts))


def make_batch(batch: int, height: int, width: int, num_classes: int, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)
    target = torch.randint(0, num_classes, (batch, height, width), generator=generator)
    target[:, -height // 16 :] = 255  # some ignored pixels, as in real labels
    return images.to(device), target.to(device)


def train_step_speed(
    loss_name: str, mode: str, device: torch.device, shape, batch: int, num_classes: int, iters: int, warmup: int, profile: bool = False
) -> float:
    """Images per second of the full training step (with ``profile``, also print the top kernels)."""
    settings = MODES[mode]
    if settings["graph"] and device.type != "cuda":
        raise ValueError("CUDA graphs need CUDA")
    torch.manual_seed(0)
    runtime = Runtime(device, settings["amp"], settings["channels_last"])
    model = build_model({"arch": "DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": None, "encoder_output_stride": 16}, num_classes)
    model = model.to(device, memory_format=torch.channels_last if settings["channels_last"] else torch.contiguous_format).train()
    criterion = make_loss(loss_name, num_classes).to(device)
    optimizer_options = {"lr": 1e-4, "weight_decay": 1e-4}
    if device.type == "cuda":
        optimizer_options.update(fused=True, capturable=settings["graph"])
    optimizer = torch.optim.AdamW(model.parameters(), **optimizer_options)
    network = torch.compile(model) if settings["compile"] else model
    normalizer = Normalizer([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], runtime)
    images, target = make_batch(batch, *shape, num_classes, device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            logits = network(normalizer(images))
            loss = criterion(logits, target)
        loss.backward()
        optimizer.step()
        return loss

    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if settings["graph"]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            with runtime.autocast():
                static_loss = criterion(network(normalizer(images)), target)
            static_loss.backward()
            optimizer.step()
        run = graph.replay
    else:
        run = step
    for _ in range(warmup):
        run()
    synchronize()
    if profile:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(5):
                run()
            synchronize()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"-- profile of 5 steps, {loss_name}/{mode}")
        print(profiler.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=60))
    start = time.perf_counter()
    for _ in range(iters):
        run()
    synchronize()
    return batch * iters / (time.perf_counter() - start)


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["threads"] = torch.get_num_threads()
    return info


def run_script(name: str, args: list[str], json_path: Path) -> dict | None:
    script = REPO / "scripts" / name
    if not script.is_file():
        print(f"({name} not found: section skipped)")
        return None
    subprocess.run([sys.executable, str(script), *args, "--json", str(json_path)], check=True)
    return json.loads(json_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="train", help="comma list of train,data,eval")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=2, default=None, help="H W (default 384 768 on CUDA, 96 192 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on CUDA, 4 on CPU")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument(
        "--losses", default=None,
        help="comma list (default: ce,recall,authors_recall_reference, plus ce_triton,recall_triton on CUDA with Triton)",
    )
    parser.add_argument("--modes", default=None, help=f"comma list of {','.join(MODES)} (default: fp32 on CPU; fp32,bf16_cl,bf16_cl_graph on CUDA)")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="print the top kernels of each loss and mode (torch.profiler)")
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"))
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    shape = args.shape or ([384, 768] if cuda else [96, 192])
    batch = args.batch or (8 if cuda else 4)
    modes = (args.modes or ("fp32,bf16_cl,bf16_cl_graph" if cuda else "fp32")).split(",")
    if args.losses is None:
        fused = cuda and triton_available()
        args.losses = "ce,ce_triton,recall,recall_triton,authors_recall_reference" if fused else "ce,recall,authors_recall_reference"
    iters, warmup = args.iters or (30 if cuda else 5), args.warmup or (10 if cuda else 2)
    result = {"machine": machine_info(device), "shape": shape, "batch": batch, "classes": args.classes, "train_step": []}
    sections = args.sections.split(",")

    if "train" in sections:
        print(f"training step, images/s: DeepLabV3+ ResNet18 OS16, batch {batch}, {shape[0]}x{shape[1]}, {args.classes} classes, {device}")
        print(f"{'loss':<26}" + "".join(f"{m:>18}" for m in modes))
        for loss_name in args.losses.split(","):
            row = {"loss": loss_name}
            for mode in modes:
                if loss_name == "authors_recall_reference" and MODES[mode]["graph"]:
                    row[mode] = None  # it synchronises with the host every step: cannot be captured
                    continue
                try:
                    row[mode] = round(train_step_speed(loss_name, mode, device, shape, batch, args.classes, iters, warmup, args.profile), 1)
                except Exception as error:  # report and go on: one failing mode must not hide the rest
                    print(f"  {loss_name}/{mode} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
                    row[mode] = None
            result["train_step"].append(row)
            print(f"{loss_name:<26}" + "".join(f"{row[m] if row[m] is not None else '-':>18}" for m in modes), flush=True)
        ce = next((r for r in result["train_step"] if r["loss"] == "ce"), None)
        if ce:
            for row in result["train_step"]:
                row["step_time_vs_ce"] = {m: round(ce[m] / row[m], 3) for m in modes if row.get(m) and ce.get(m)}
            print("step time relative to CE:", {r["loss"]: r["step_time_vs_ce"] for r in result["train_step"]})
    if "data" in sections:
        result["data"] = run_script("benchmark_data.py", [], args.json.with_name("benchmark_data.json"))
    if "eval" in sections:
        result["eval"] = run_script("benchmark_inference.py", ["--device", str(device.type)], args.json.with_name("benchmark_inference.json"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
