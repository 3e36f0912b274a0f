"""Score a checkpoint: rebuild model and dataset from the config stored in it, apply the
user's command-line overrides on top, evaluate, and write the report (report.py) and, on
request, the predictions (predictions.py). The report records this evaluation's run and the
training run the checkpoint stored (run_record.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf


from recallseg.atomic_files import check_output_location
from recallseg.pipeline.builder import build_dataset, dataset_locations
from recallseg.evaluation.metrics import format_table, metrics_from_confusion
from recallseg.checkpoints.model import check_classes, model_from_checkpoint
from recallseg.checkpoints.stored_config import checkpoint_config
from recallseg.evaluation.loop import evaluate
from recallseg.evaluation.samples import evaluation_loader, evaluation_samples, sample_names
from recallseg.evaluation.report import write_evaluation_report
from recallseg.evaluation.run_record import differences_from_training, evaluation_record, log_record, with_end
from recallseg.evaluation.inference import Inference, check_size_multiple
from recallseg.evaluation.model_input import ModelInput
from recallseg.evaluation.memory import check_inference_memory, frame_sizes
from recallseg.models.builder import input_divisor
from recallseg.evaluation.predictions import PredictionWriter
from recallseg.runtime.device import init_runtime

log = logging.getLogger("recallseg")

__all__ = ["check_evaluation_outputs", "evaluate_checkpoint"]


def check_evaluation_outputs(ecfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], output_dir: str | Path | None) -> None:
    """Refuse, before any work, a report folder or predictions folder that is, lies inside or holds
    the dataset being scored (a prediction would replace its files), is a file, or cannot be written.
    ``output_dir`` None: not known yet (Hydra's default run directory), only ``predictions.dir`` is checked."""
    reads = dataset_locations(dataset_cfg)
    if output_dir is not None:
        check_output_location("output_dir", output_dir, reads)
    predictions = ecfg["predictions"]
    if predictions["save"] and (predictions["dir"] or output_dir is not None):
        check_output_location("predictions.dir", predictions["dir"] or Path(output_dir) / "predictions", reads)


def evaluate_checkpoint(eval_cfg: DictConfig, overrides: Iterable[str] = ()) -> dict:
    """Evaluate ``eval_cfg.checkpoint`` on ``dataset.split`` (``overrides`` change the stored config);
    returns the metrics (also written to metrics.json)."""
    started = time.perf_counter()
    checkpoint_path = Path(eval_cfg.checkpoint)
    state, stored, named = checkpoint_config(checkpoint_path, overrides)
    ecfg = OmegaConf.to_container(eval_cfg, resolve=True)
    model_input = ModelInput.from_config(stored)  # validation's pipeline; inference.* options add test-time augmentation
    settings = model_input.settings(ecfg["inference"])
    evaluation, pcfg = ecfg["evaluation"], ecfg["predictions"]
    out = Path(ecfg["output_dir"])
    check_evaluation_outputs(ecfg, stored["dataset"], out)
    trainer = stored.get("trainer", {})
    runtime = init_runtime(trainer.get("device", "auto"), trainer.get("amp", "auto"), trainer.get("channels_last", "auto"))
    split = stored["dataset"].get("split", "val")
    dataset = build_dataset(stored["dataset"], split, train=False, transform=None, trusted=False, named_by_user=named)
    classes = list(dataset.classes)
    check_classes(state, classes, checkpoint_path, f"dataset {type(dataset).__name__} ({split} split)")
    model = model_from_checkpoint(state, stored, len(classes), runtime, checkpoint_path, named)
    writer = None
    if pcfg["save"]:
        writer = PredictionWriter(
            pcfg["dir"] or out / "predictions", pcfg["format"], sample_names(dataset), classes, palette=dataset.palette, alpha=pcfg["alpha"],
        )  # fmt: skip
    full_resolution = model_input.full_resolution if evaluation["full_resolution"] is None else evaluation["full_resolution"]
    samples = evaluation_samples(
        stored["dataset"], dataset, full_resolution, keep_image=writer is not None and writer.needs_image, trusted=False, named_by_user=named
    )  # fmt: skip
    check_size_multiple(settings, input_divisor(model))
    check_inference_memory(model, settings, frame_sizes(dataset, samples.transform), runtime.device, runtime.autocast, f"the largest {split} frame")
    batch_size = evaluation["batch_size"] or trainer.get("batch_size", 1)
    loader = evaluation_loader(samples, batch_size, evaluation["num_workers"], runtime.rank, runtime.world_size, pin_memory=runtime.device.type == "cuda")
    normalizer = model_input.normalizer(runtime)

    def save(prediction: torch.Tensor, index: int, batch: dict) -> None:
        image = batch["source_image"][batch["index"].index(index)] if writer.needs_image else None
        writer.write(prediction, index, image)

    log.info("evaluating %s on %s/%s (%d images), inference %s", checkpoint_path, type(dataset).__name__, split, len(dataset), settings.as_dict())
    record = None
    if runtime.is_main:
        setup = {"evaluation": {k: v for k, v in ecfg.items() if k != "output_dir"}, "checkpoint_config": stored}
        record = evaluation_record(checkpoint_path, runtime, setup, stored["dataset"], split, dataset)
        log_record(record)
        note = differences_from_training(state.get("run"), record, split)
        if note:
            log.info("%s", note)
    matrix = evaluate(
        model, loader, normalizer, runtime, len(classes), dataset.ignore_index, predict=Inference(settings), on_prediction=save if writer else None
    )
    confusion = matrix.compute()
    metrics = metrics_from_confusion(confusion, classes)
    if runtime.is_main:
        present = [classes[c] for c in torch.nonzero(confusion.sum(1)).flatten().tolist()]
        if not present:
            log.warning("no labelled pixels in the %s split (a test split without public labels?): every metric is n/a", split)
        elif len(present) == 1 and len(classes) > 1:
            log.warning("every labelled pixel of the %s split is class %r: the scores say nothing of the other classes", split, present[0])
        print(format_table(metrics), flush=True)
        extra: dict[str, Any] = {
            "iteration": int(state.get("iteration", 0)),
            "checkpoint": str(checkpoint_path),
            "split": split,
            "dataset": type(dataset).__name__,
            "images": len(dataset),
            "inference": settings.as_dict(),
            "evaluation": {"full_resolution": full_resolution, "batch_size": int(batch_size), "amp": str(runtime.amp_dtype or "off").replace("torch.", "")},
            "run": with_end(record, started, len(dataset), runtime),
            "training_run": state.get("run"),
        }
        if writer is not None:
            extra["predictions"] = {"format": writer.format, "dir": str(writer.directory)}
        files = write_evaluation_report(out, metrics, confusion.cpu().numpy(), classes, **extra)
        log.info("metrics written to %s (also %s)", files["metrics.json"], ", ".join(name for name in files if name != "metrics.json"))
        if writer is not None:
            log.info("%d predictions (%s) written to %s", writer.written, writer.format, writer.directory)
    return metrics
