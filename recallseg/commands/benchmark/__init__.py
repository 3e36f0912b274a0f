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
  (``recallseg.commands.benchmark.inference``), random weights, 19 classes.

One JSON file (``--json``) holds the machine and every section run. Shared machines vary by
about +-15%: compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from recallseg.atomic_files import atomic_write
from recallseg.commands.benchmark.data import data_section
from recallseg.commands.benchmark.inference import inference_section
from recallseg.commands.benchmark.losses import CONFIGS, loss_section
from recallseg.commands.benchmark.machine import load_average, machine_info
from recallseg.commands.benchmark.step import STEP_MODES, step_section

SECTIONS = ("step", "loss", "data", "inference")


def write_json(path: Path, result: dict) -> None:
    with atomic_write(path) as handle:
        handle.write(json.dumps(result, indent=2))
    print(f"wrote {path}")


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
