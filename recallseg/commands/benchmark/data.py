"""The ``data`` section: samples/s of one data-loading worker for the paper's two protocols, on
written real-size frames, uncached and from the decoded-frame cache (and a whole DataLoader).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from recallseg.commands.benchmark.machine import machine_info

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
    from recallseg.pipeline.loaders import WorkerLoader

    per_batch_guess = 40.0 * workers  # enough keys for min_seconds at a generous rate
    keys = [(i % len(dataset), i) for i in range(int(per_batch_guess * min_seconds * 4) + batch_size * (workers + 2))]
    loader = WorkerLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=workers, worker_init_fn=_one_thread, prefetch_factor=4)
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
            source = make()
            source.transform = build_transform(specs, size_divisor=32, ignore_index=255)
            png_mb = megabytes([s.image for s in source.samples])
            label_mb = megabytes([s.label for s in source.samples])
            uncached_wall, uncached = samples_per_second(source, 2 * len(source), args.min_seconds)
            cached = CachedDataset(make(), tmp / "cache")
            start = time.perf_counter()
            cached.fill(progress=False)
            fill = len(cached) / (time.perf_counter() - start)
            cached.transform = source.transform
            cached_wall, cached_rate = samples_per_second(cached, 4 * len(cached), args.min_seconds)
            loader = {}
            if args.loader_workers:
                loader = {
                    "loader_workers": args.loader_workers,
                    "loader_uncached_samples_per_s": round(loader_samples_per_second(source, args.loader_workers, args.loader_batch, args.min_seconds), 1),
                    "loader_cached_samples_per_s": round(loader_samples_per_second(cached, args.loader_workers, args.loader_batch, args.min_seconds), 1),
                }
            rows.append({
                "protocol": name, "pipeline": description, "frames": len(source), "image_png_mb": round(png_mb, 2),
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
