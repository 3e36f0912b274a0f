"""The ``step`` section: images/s of the trainer's own ``Trainer.step``, for each loss and mode.

The trainer is built from the training config, so what is timed is what training runs
(normaliser, AMP, GradScaler, scheduler, CUDA graph when on), not a copy of it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from recallseg.commands.benchmark.losses import IGNORE, AuthorsRecallLossReference
from recallseg.losses.fused.statistics import triton_available

STEP_MODES = {
    "fp32": ["trainer.amp=off", "trainer.channels_last=false"],
    "bf16_cl": ["trainer.amp=bf16", "trainer.channels_last=true"],
    "bf16_cl_graph": ["trainer.amp=bf16", "trainer.channels_last=true", "trainer.cuda_graph=true"],
}


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

