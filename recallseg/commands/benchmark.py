"""recallseg's one benchmark tool: the training step, the losses alone, data loading and inference.

    recallseg-benchmark                                              # all sections, CPU-sized defaults
    recallseg-benchmark --sections step --device cuda --shape 384 768 --batch 8 --modes fp32,bf16_cl,bf16_cl_graph
    recallseg-benchmark --sections loss --loss-shape 4 16 192 384 --repeats 7
    recallseg-benchmark --sections data --frames 32 --loader-workers 16
    recallseg-benchmark --sections inference --inference-size 1024 2048 --device cuda
    (python scripts/benchmark.py ... is the same command)

Sections (``--sections``, a comma list):

- ``step``: images/s of the trainer's own training step, ``Trainer.step`` of a Trainer built from
  the training config (uint8 batch normalised on the device, DeepLabV3+ ResNet18 at output stride
  16 forward, loss, backward with the GradScaler, optimizer update, scheduler step), for each loss
  and mode: ``fp32`` (trainer.amp=off, channels-first), ``bf16_cl`` (amp=bf16, channels_last:
  the CUDA default), ``bf16_cl_graph`` (the same with trainer.cuda_graph=true). Losses
  ``ce_triton``/``recall_triton`` use ``loss.kernel=triton`` (CUDA with Triton only);
  ``authors_recall_reference`` re-creates the paper code's recall loss for comparison (not a
  recallseg loss; it synchronises with the host every step, so it has no graph mode).
- ``loss``: forward + backward of every loss alone against cross entropy on random logits,
  timed round-robin (median and minimum ms, ratios to CE measured in the same run).
- ``data``: samples/s of one data-loading worker for the paper's two protocols (Synthia
  1280x760 -> 768x384; Cityscapes 2048x1024 scale/crop 768x768, flip, jitter) on written
  real-size frames, uncached and from the decoded-frame cache; with ``--loader-workers`` also a
  whole DataLoader. Rates per CPU second of the worker, wall-clock beside them.
- ``inference``: images/s of whole-image vs sliding-window inference and flip / multi-scale TTA
  (``engine.inference.benchmark_inference``), random weights, 19 classes.

One JSON file (``--json``) holds the machine and every section run. Shared machines vary by
about +-15%: compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recallseg.losses import LossContext, build_loss
from recallseg.losses.fused.statistics import triton_available

SECTIONS = ("step", "loss", "data", "inference")
STEP_MODES = {
    "fp32": ["trainer.amp=off", "trainer.channels_last=false"],
    "bf16_cl": ["trainer.amp=bf16", "trainer.channels_last=true"],
    "bf16_cl_graph": ["trainer.amp=bf16", "trainer.channels_last=true", "trainer.cuda_graph=true"],
}
IGNORE = 255


def machine_info(device: torch.device) -> dict:
    """The machine a run measured, for every section's JSON."""
    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
        "device": str(device), "load_average": load_average(),
    }  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["threads"] = torch.get_num_threads()
    return info


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load: on a shared CPU the timings mean little when it exceeds the cores."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# loss (and the authors' reference, also used by the step section)

CONFIGS = {
    "ce": {"name": "ce"},
    "weighted_ce": {"name": "weighted_ce", "mode": "median"},
    "class_balanced": {"name": "class_balanced", "beta": 0.9999},
    "ce_triton": {"name": "ce", "kernel": "triton"},
    "recall": {"name": "recall"},
    "recall_triton": {"name": "recall", "kernel": "triton"},
    "recall_ema": {"name": "recall", "statistics": "ema"},
    "recall_soft": {"name": "recall", "soft": True},
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


def benchmark(device: torch.device, args) -> dict:
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



def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


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
    args.losses_alone = losses
    results = []
    for device in devices:
        result = benchmark(device, argparse.Namespace(**{**vars(args), "losses": losses}))
        print_table(result)
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# step: the trainer's own training step


def step_trainer(loss_name: str, mode: str, device: torch.device, shape, batch: int, num_classes: int, workdir: Path):
    """A Trainer built from the training config for this loss and mode (synthetic data of ``shape``)."""
    from omegaconf import OmegaConf

    from recallseg.config.compose import compose_checked
    from recallseg.training.trainer import Trainer
    from recallseg.config.schema import validate_train_config

    loss = {"ce_triton": ["loss=ce", "loss.kernel=triton"], "recall_triton": ["loss=recall", "loss.kernel=triton"]}.get(loss_name, [f"loss={loss_name}"])
    if loss_name == "authors_recall_reference":
        loss = ["loss=ce"]  # replaced below
    overrides = [
        f"output_dir={workdir / f'{loss_name}_{mode}'}", f"trainer.device={device.type}", f"trainer.batch_size={batch}", "trainer.num_workers=0",
        f"dataset.height={shape[0]}", f"dataset.width={shape[1]}", "dataset.num_train=4", "dataset.num_val=1", "optimizer.lr=1e-4",
        "model.encoder_weights=null", *STEP_MODES[mode], *loss,
    ]  # fmt: skip
    cfg = OmegaConf.create(validate_train_config(compose_checked("train", overrides)))
    trainer = Trainer(cfg)
    if trainer.num_classes != num_classes:
        raise ValueError(f"the synthetic dataset has {trainer.num_classes} classes")
    if loss_name == "authors_recall_reference":
        trainer.criterion = AuthorsRecallLossReference(num_classes).to(device)
    trainer._train_mode()
    return trainer


def step_speed(trainer, batch: int, shape, num_classes: int, iters: int, warmup: int) -> float:
    """Images per second of ``trainer.step`` on one fixed in-memory batch (uint8, as the loader gives)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, *shape, 3), dtype=torch.uint8, generator=generator)
    masks = torch.randint(0, num_classes, (batch, *shape), dtype=torch.uint8, generator=generator)
    masks[:, -shape[0] // 16 :] = IGNORE  # some ignored pixels, as in real labels
    cuda = trainer.runtime.device.type == "cuda"
    if cuda:
        images, masks = images.pin_memory(), masks.pin_memory()
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        trainer.step(images, masks)
    synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        trainer.step(images, masks)
    synchronize()
    return batch * iters / (time.perf_counter() - start)


def step_section(device: torch.device, args) -> dict:
    from recallseg.data.synthetic import CLASSES

    cuda = device.type == "cuda"
    shape = args.shape or ([384, 768] if cuda else [96, 192])
    batch = args.batch or (8 if cuda else 4)
    modes = (args.modes or ("fp32,bf16_cl,bf16_cl_graph" if cuda else "fp32")).split(",")
    losses = args.losses or ("ce,ce_triton,recall,recall_triton,authors_recall_reference" if cuda and triton_available() else "ce,recall,authors_recall_reference")
    iters, warmup = args.iters or (30 if cuda else 5), args.warmup or (10 if cuda else 2)
    num_classes = len(CLASSES)
    rows = []
    print(f"training step (Trainer.step), images/s: DeepLabV3+ ResNet18 OS16, batch {batch}, {shape[0]}x{shape[1]}, {num_classes} classes, {device}")
    print(f"{'loss':<26}" + "".join(f"{m:>16}" for m in modes))
    with tempfile.TemporaryDirectory() as tmp:
        for loss_name in losses.split(","):
            row = {"loss": loss_name}
            for mode in modes:
                if mode not in STEP_MODES:
                    raise SystemExit(f"error: --modes: unknown mode {mode!r}; choose from {', '.join(STEP_MODES)}")
                if loss_name == "authors_recall_reference" and "graph" in mode:
                    row[mode] = None  # it synchronises with the host every step: cannot be captured
                    continue
                try:
                    trainer = step_trainer(loss_name, mode, device, shape, batch, num_classes, Path(tmp))
                    row[mode] = round(step_speed(trainer, batch, shape, num_classes, iters, warmup), 2)
                except Exception as error:  # report and go on: one failing mode must not hide the rest
                    print(f"  {loss_name}/{mode} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                    row[mode] = None
            rows.append(row)
            print(f"{loss_name:<26}" + "".join(f"{row[m] if row[m] is not None else '-':>16}" for m in modes), flush=True)
    ce = next((r for r in rows if r["loss"] == "ce"), None)
    if ce:
        for row in rows:
            row["step_time_vs_ce"] = {m: round(ce[m] / row[m], 3) for m in modes if row.get(m) and ce.get(m)}
        print("step time relative to CE:", {r["loss"]: r["step_time_vs_ce"] for r in rows})
    return {"shape": shape, "batch": batch, "classes": num_classes, "iters": iters, "warmup": warmup, "rows": rows}


# ---------------------------------------------------------------------------------------------
# data: one loader worker on real-size frames

CITYSCAPES_TRANSFORM = [
    {"_target_": "recallseg.pipeline.transforms.RandomScaleCrop", "height": 768, "width": 768, "scale": [0.75, 2.0], "fill_mask": 255},
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.ColorJitter", "brightness": 0.25, "contrast": 0.25, "saturation": 0.25, "hue": 0.0, "p": 1.0},
]


def street_frame(rng: np.random.Generator, height: int, width: int, num_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like RGB frame and its label map: textured polygons over a sky/ground gradient."""
    labels = np.zeros((height, width), np.uint8)
    base = np.zeros((height, width, 3), np.float32)
    horizon = int(height * rng.uniform(0.35, 0.55))
    base[:horizon] = np.linspace(200, 140, horizon, dtype=np.float32)[:, None, None] * np.array([0.6, 0.8, 1.0], np.float32)
    base[horizon:] = np.linspace(90, 130, height - horizon, dtype=np.float32)[:, None, None]
    labels[:horizon], labels[horizon:] = 1 % num_ids, 2 % num_ids
    for _ in range(60):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.01, 0.15) * width
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 8)))
        points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles) * rng.uniform(0.3, 1.5)], 1).astype(np.int32)
        colour = tuple(float(v) for v in rng.uniform(20, 235, 3))
        cv2.fillPoly(base, [points], colour)
        cv2.fillPoly(labels, [points], int(rng.integers(0, num_ids)))
    base = cv2.GaussianBlur(base, (0, 0), 1.5)  # soft edges, like a lens
    texture = cv2.resize(rng.normal(0, 6, (height // 8, width // 8)).astype(np.float32), (width, height))
    base += texture[:, :, None] + rng.normal(0, 1.6, base.shape).astype(np.float32)  # shading + sensor noise
    return np.clip(base, 0, 255).astype(np.uint8), labels


def write_synthia(root: Path, frames: int, rng: np.random.Generator) -> None:
    for i in range(frames):
        camera = ("Omni_B", "Omni_F", "Omni_L", "Omni_R")[i % 4]
        image, labels = street_frame(rng, 760, 1280, 16)
        label = np.zeros((760, 1280, 3), np.uint16)
        label[:, :, 2] = labels  # class in R (BGR index 2)
        label[:, :, 1] = (labels.astype(np.uint16) * 37) % 500  # instance ids
        for directory, array in (("RGB", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), ("GT/LABELS", label)):
            path = root / "SYNTHIA-SEQS-05-SUMMER" / directory / "Stereo_Left" / camera / f"{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), array)


def write_cityscapes(root: Path, frames: int, rng: np.random.Generator) -> None:
    for i in range(frames):
        image, labels = street_frame(rng, 1024, 2048, 34)
        stem = f"aachen_{i:06d}_000019"
        for path, array in (
            (root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
            (root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", labels),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), array)


def samples_per_second(dataset, min_samples: int, min_seconds: float) -> tuple[float, float]:
    """Time ``dataset[(index, seed)]`` round-robin over the frames: ``(per wall second, per CPU second)``.

    Per CPU second is what one worker delivers on a core of its own; it stays put when other
    processes share the machine, while the wall-clock rate drops.
    """
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while count < min_samples or time.perf_counter() - start < min_seconds:
        image, mask = dataset[(count % len(dataset), count)]
        count += 1
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)


def _one_thread(worker_id: int) -> None:
    cv2.setNumThreads(1)


def loader_samples_per_second(dataset, workers: int, batch_size: int, min_seconds: float) -> float:
    """Samples/s of a whole DataLoader (``workers`` processes, uint8 batches), after its warm-up."""
    from torch.utils.data import DataLoader

    per_batch_guess = 40.0 * workers  # enough keys for min_seconds at a generous rate
    keys = [(i % len(dataset), i) for i in range(int(per_batch_guess * min_seconds * 4) + batch_size * (workers + 2))]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=workers, worker_init_fn=_one_thread, prefetch_factor=4)
    iterator = iter(loader)
    for _ in range(workers):  # every worker has started and produced a batch
        next(iterator)
    count, start = 0, time.perf_counter()
    for images, _ in iterator:
        count += images.shape[0]
        if time.perf_counter() - start >= min_seconds:
            break
    return count / (time.perf_counter() - start)


def megabytes(paths) -> float:
    sizes = [p.stat().st_size for p in paths]
    return sum(sizes) / len(sizes) / 1e6



def data_section(args) -> list[dict]:
    from recallseg.pipeline.cache import CachedDataset
    from recallseg.data.cityscapes import Cityscapes
    from recallseg.data.synthia import Synthia
    from recallseg.pipeline.transforms import build_transform

    if args.frames < 4:
        raise SystemExit("error: --frames: at least 4 (one frame per Synthia camera)")
    threads = torch.get_num_threads()
    machine = machine_info(torch.device("cpu"))
    cv2.setNumThreads(1)  # one DataLoader worker = one core
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        print(f"writing {args.frames} frames per dataset under {tmp} ...", flush=True)
        write_synthia(tmp / "synthia", args.frames, rng)
        write_cityscapes(tmp / "cityscapes", args.frames, rng)
        protocols = {
            "synthia_paper": (
                "1280x760 -> 768x384 resize",
                lambda: Synthia(tmp / "synthia", "all", sides=["Left"], resize=[384, 768]),
                None,
            ),
            "cityscapes_paper": (
                "2048x1024 -> scale/crop 768x768, flip, jitter",
                lambda: Cityscapes(tmp / "cityscapes", "train"),
                CITYSCAPES_TRANSFORM,
            ),
        }
        rows = []
        for name, (description, make, specs) in protocols.items():
            plain = make()
            plain.transform = build_transform(specs, size_divisor=32, ignore_index=255)
            png_mb = megabytes([s.image for s in plain.samples])
            label_mb = megabytes([s.label for s in plain.samples])
            uncached_wall, uncached = samples_per_second(plain, 2 * len(plain), args.min_seconds)
            cached = CachedDataset(make(), tmp / "cache")
            start = time.perf_counter()
            cached.fill(progress=False)
            fill = len(cached) / (time.perf_counter() - start)
            cached.transform = plain.transform
            cached_wall, cached_rate = samples_per_second(cached, 4 * len(cached), args.min_seconds)
            loader = {}
            if args.loader_workers:
                loader = {
                    "loader_workers": args.loader_workers,
                    "loader_uncached_samples_per_s": round(loader_samples_per_second(plain, args.loader_workers, args.loader_batch, args.min_seconds), 1),
                    "loader_cached_samples_per_s": round(loader_samples_per_second(cached, args.loader_workers, args.loader_batch, args.min_seconds), 1),
                }
            rows.append({
                "protocol": name, "pipeline": description, "frames": len(plain), "image_png_mb": round(png_mb, 2),
                "label_png_mb": round(label_mb, 3), "uncached_samples_per_s": round(uncached, 1),
                "cache_fill_frames_per_s": round(fill, 1), "cached_samples_per_s": round(cached_rate, 1),
                "uncached_samples_per_wall_s": round(uncached_wall, 1), "cached_samples_per_wall_s": round(cached_wall, 1),
                "load_average_1min": round(os.getloadavg()[0], 2), **loader,
            })  # fmt: skip

    torch.set_num_threads(threads)
    header = f"{'protocol':<18}{'pipeline':<46}{'PNG MB':>8}{'uncached/s':>12}{'cached/s':>10}{'(wall: uncached':>17}{'cached)':>9}"
    print(
        f"\nsamples/s per worker (one process, OpenCV 1 thread; per CPU second, wall clock in brackets) "
        f"on {machine['cpu_count']}-core {machine['processor']}, load average {os.getloadavg()[0]:.1f}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['protocol']:<18}{row['pipeline']:<46}{row['image_png_mb']:>8.2f}"
            f"{row['uncached_samples_per_s']:>12.1f}{row['cached_samples_per_s']:>10.1f}"
            f"{row['uncached_samples_per_wall_s']:>17.1f}{row['cached_samples_per_wall_s']:>9.1f}"
        )
    for row in rows:
        if "loader_workers" in row:
            print(
                f"DataLoader, {row['loader_workers']} workers, batch {args.loader_batch}: {row['protocol']}: "
                f"{row['loader_uncached_samples_per_s']:.1f} samples/s uncached, {row['loader_cached_samples_per_s']:.1f} cached"
            )
    print("targets per worker: >= 30 uncached, >= 200 cached (authors' loader: ~21/s for the Synthia protocol)")
    return rows


# ---------------------------------------------------------------------------------------------
# inference: whole image vs sliding windows, TTA


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


def inference_section(device: torch.device, args) -> list[dict]:
    from recallseg.evaluation.inference import benchmark_inference
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


# ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recallseg-benchmark", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), metavar="SECTION[,SECTION]", help=f"comma list of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (loss: also all = CPU and CUDA)")
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"), help="where the results go")
    step = parser.add_argument_group("step")
    step.add_argument("--shape", type=int, nargs=2, default=None, metavar=("H", "W"), help="default 384 768 on CUDA, 96 192 on CPU")
    step.add_argument("--batch", type=int, default=None, help="default 8 on CUDA, 4 on CPU")
    step.add_argument("--losses", default=None, help="comma list (default ce,recall,authors_recall_reference, plus ce_triton,recall_triton on CUDA with Triton)")
    step.add_argument("--modes", default=None, help=f"comma list of {','.join(STEP_MODES)} (default fp32 on CPU; all on CUDA)")
    step.add_argument("--iters", type=int, default=None, help="timed steps (default 30 on CUDA, 5 on CPU)")
    step.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 on CUDA, 2 on CPU)")
    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss-shape", type=int, nargs=4, default=[4, 16, 192, 384], metavar=("N", "C", "H", "W"))
    loss.add_argument("--loss-names", nargs="+", default=list(CONFIGS) + ["authors_recall_reference"], help="losses timed alone")
    loss.add_argument("--repeats", type=int, default=7)
    loss.add_argument("--loss-warmup", type=int, default=1)
    loss.add_argument("--ignore-fraction", type=float, default=0.05)
    data = parser.add_argument_group("data")
    data.add_argument("--frames", type=int, default=16, help="frames written per dataset (at least 4: one per Synthia camera)")
    data.add_argument("--min-seconds", type=float, default=3.0, help="time each measurement at least this long")
    data.add_argument("--workdir", type=Path, default=None, help="where to write the frames and cache (default: a temp dir)")
    data.add_argument("--loader-workers", type=int, default=0, help="also time a DataLoader with this many workers (0: skip)")
    data.add_argument("--loader-batch", type=int, default=6, help="batch size of the DataLoader measurement")
    inference = parser.add_argument_group("inference")
    inference.add_argument("--inference-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="default 1024 2048 on CUDA, 512 1024 on CPU")
    inference.add_argument("--inference-iterations", type=int, default=3)
    inference.add_argument("--amp", default="auto", help="auto | bf16 | fp16 | off (auto: bf16/fp16 on CUDA, off on CPU)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"error: --sections: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    from recallseg.runtime.device import resolve_device

    device = resolve_device("auto" if args.device == "all" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: dict = {"machine": machine_info(device)}
    if "step" in sections:
        result["step"] = step_section(device, args)
    if "loss" in sections:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if args.device in ("all", "auto") and torch.cuda.is_available() else [])
        devices = [device] if args.device in ("cpu", "cuda") else devices
        result["loss"] = loss_section(devices, args)
    if "data" in sections:
        result["data"] = data_section(args)
    if "inference" in sections:
        result["inference"] = inference_section(device, args)
    result["machine"]["load_average_after"] = load_average()
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
