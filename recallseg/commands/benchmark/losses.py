"""The ``loss`` section: forward + backward of every loss alone against cross entropy on random
logits, timed round-robin so that a shared machine's drift hits every loss alike.

The authors' recall loss is re-created here as a reference to compare against; the ``step``
section trains with it too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from recallseg.commands.benchmark.machine import device_name, load_average
from recallseg.losses import LossContext, build_loss
from recallseg.losses.fused.statistics import triton_available

IGNORE = 255

CONFIGS = {
    "ce": {"name": "ce"},
    "weighted_ce": {"name": "weighted_ce", "mode": "median"},
    "class_balanced": {"name": "class_balanced", "beta": 0.9999},
    "ce_triton": {"name": "ce", "kernel": "triton"},
    "recall": {"name": "recall"},
    "recall_triton": {"name": "recall", "kernel": "triton"},
    "recall_ema": {"name": "recall", "statistics": "ema"},
    "recall_soft": {"name": "recall", "soft": True},
    "recall_union": {"name": "recall", "denominator": "union"},
    "recall_soft_union": {"name": "recall", "soft": True, "denominator": "union"},
    "focal": {"name": "focal", "gamma": 2.0},
    "ohem": {"name": "ohem", "thresh": 0.7, "min_kept": 100000},
    "lovasz": {"name": "lovasz"},
    "recall_lovasz": {"name": "combined", "terms": [{"name": "recall", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}]},
}


class AuthorsRecallLossReference(nn.Module):
    """Reference for benchmarking only, written from a description of the authors' code; not for training.

    Reproduces the costly steps of the authors' recall loss: argmax over classes, torch.unique
    over the labels and over the missed labels (each a host-device sync), boolean-mask
    indexing, counters that start at 1, and a mean over every pixel, ignored ones included.
    Their code indexes the weights with label 255 and crashes; here ignored labels are
    clamped into range so the benchmark runs, and the ignore label's count is moved onto
    the second label present, as their workaround does.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def _counter(self, labels: torch.Tensor) -> torch.Tensor:
        counter = torch.ones(self.num_classes, device=labels.device)
        present, counts = torch.unique(labels, return_counts=True)
        is_ignore = present == self.ignore_index
        if is_ignore.any():  # host sync, as in their code
            counts = counts.clone()
            counts[is_ignore] = (counts[1] if counts.numel() > 1 else counts[0]).clone()
            present = torch.where(is_ignore, torch.ones_like(present), present)
        counter[present] = counts.float()
        return counter

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction = logits.argmax(dim=1)
        missed = (prediction != target).view(-1)
        total_counter = self._counter(target.reshape(-1))
        miss_counter = self._counter(target.reshape(-1)[missed])
        weight = miss_counter / total_counter
        per_pixel = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        return (weight[target.clamp(max=self.num_classes - 1)] * per_pixel).mean()


def make_batch(shape: tuple[int, int, int, int], ignore_fraction: float, device: torch.device, seed: int = 0):
    n, c, h, w = shape
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=generator) * 2.0
    # Skewed labels, as in segmentation: class c has probability ~ 1 / (c + 1).
    probabilities = 1.0 / torch.arange(1, c + 1, dtype=torch.float64)
    target = torch.multinomial(probabilities / probabilities.sum(), n * h * w, replacement=True, generator=generator).view(n, h, w)
    target[torch.rand(n, h, w, generator=generator) < ignore_fraction] = IGNORE
    return logits.to(device), target.to(device)


def build_all(names: list[str], num_classes: int, counts: torch.Tensor, device: torch.device) -> dict[str, nn.Module]:
    context = LossContext(num_classes=num_classes, ignore_index=IGNORE, class_pixel_counts=lambda: counts)
    # The fused Triton kernel (loss.kernel=triton) runs on CUDA only, and needs Triton.
    fused = device.type == "cuda" and triton_available()
    usable = [n for n in names if n in CONFIGS and (fused or CONFIGS[n].get("kernel") != "triton")]
    losses = {name: build_loss(CONFIGS[name], context) for name in usable}
    if "authors_recall_reference" in names:
        losses["authors_recall_reference"] = AuthorsRecallLossReference(num_classes)
    return {name: loss.to(device).train() for name, loss in losses.items()}


def time_once(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> float:
    x = logits.detach().requires_grad_(True)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss(x, target).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0


def time_losses(device: torch.device, args) -> dict:
    logits, target = make_batch(tuple(args.loss_shape), args.ignore_fraction, device)
    valid = target[target != IGNORE].cpu()
    counts = torch.bincount(valid, minlength=args.loss_shape[1]).double()
    losses = build_all(args.losses, args.loss_shape[1], counts, device)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for name, loss in losses.items():
        for _ in range(args.loss_warmup):
            time_once(loss, logits, target)
    for _ in range(args.repeats):
        for name, loss in losses.items():
            times[name].append(time_once(loss, logits, target))
    baseline, baseline_min = statistics.median(times["ce"]), min(times["ce"])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(
            {
                "loss": name,
                "median_ms": median,
                "min_ms": min(samples),
                "ratio_to_ce": median / baseline,
                "ratio_to_ce_of_min": min(samples) / baseline_min,
                "samples_ms": samples,
            }
        )
    return {"device": str(device), "device_name": device_name(device), "load_average": load_average(), "rows": rows}


def print_table(result: dict) -> None:
    print(f"\n{result['device']} ({result['device_name']}; load average after: {result['load_average']})")
    print(f"| {'loss':<26} | {'median ms':>10} | {'min ms':>9} | {'x CE (median)':>13} | {'x CE (min)':>10} |")
    print(f"|{'-' * 28}|{'-' * 12}|{'-' * 11}|{'-' * 15}|{'-' * 12}|")
    for row in result["rows"]:
        print(
            f"| {row['loss']:<26} | {row['median_ms']:>10.1f} | {row['min_ms']:>9.1f} "
            f"| {row['ratio_to_ce']:>13.2f} | {row['ratio_to_ce_of_min']:>10.2f} |"
        )


def loss_section(devices: list[torch.device], args) -> list[dict]:
    losses = args.loss_names
    if "ce" not in losses:
        losses = ["ce", *losses]
    unknown = [name for name in losses if name not in CONFIGS and name != "authors_recall_reference"]
    if unknown:
        raise SystemExit(f"error: --loss-names: unknown loss(es) {unknown}; choose from {list(CONFIGS) + ['authors_recall_reference']}")
    results = []
    for device in devices:
        result = time_losses(device, argparse.Namespace(**{**vars(args), "losses": losses}))
        print_table(result)
        results.append(result)
    return results
