"""recallseg-benchmark: every section runs (tiny sizes) and lands in one JSON file."""

import json

import pytest
import torch
from torch import nn

from recallseg.commands import benchmark
from recallseg.commands.benchmark import step
from recallseg.commands.benchmark.inference import benchmark_inference


@pytest.mark.slow
def test_every_section_runs_and_writes_one_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    benchmark.main([
        "--device", "cpu", "--json", str(out), "--shape", "64", "64", "--batch", "2", "--iters", "1", "--warmup", "1",
        "--losses", "ce,authors_recall_reference", "--loss-shape", "2", "9", "32", "64", "--repeats", "1", "--loss-names", "recall",
        "--frames", "4", "--min-seconds", "0.05", "--inference-size", "64", "128", "--inference-iterations", "1",
    ])  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "step", "loss", "data", "inference"}
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["torch"]
    assert [row["loss"] for row in result["step"]["rows"]] == ["ce", "authors_recall_reference"]
    assert all(row["fp32"] > 0 for row in result["step"]["rows"])
    assert [row["loss"] for row in result["loss"][0]["rows"]] == ["ce", "recall"]
    assert {row["protocol"] for row in result["data"]} == {"synthia_paper", "cityscapes_paper"}
    assert [row["name"] for row in result["inference"]] == ["whole", "slide", "whole + flip", "whole + flip + 3 scales"]


@pytest.mark.slow
def test_the_step_section_times_the_trainers_own_step(tmp_path, monkeypatch):
    """Not a copy of the step: Trainer.step is what runs (GradScaler, normaliser, scheduler, CUDA graph when on)."""
    from recallseg.training.trainer import Trainer

    calls = []
    original = Trainer.step
    monkeypatch.setattr(Trainer, "step", lambda self, images, masks: calls.append(images.shape) or original(self, images, masks))
    trainer = step.step_trainer("ce", "fp32", torch.device("cpu"), [32, 32], 2, 9, tmp_path)
    assert step.step_speed(trainer, 2, [32, 32], 9, iters=1, warmup=1) > 0
    assert calls == [(2, 32, 32, 3)] * 2  # warmup + timed: the trainer's method, on uint8 NHWC batches
    assert trainer.iteration == 0  # the trainer's loop did not run; only its step


def test_unknown_sections_are_one_line():
    with pytest.raises(SystemExit, match="unknown section"):
        benchmark.main(["--sections", "stepp"])


def test_inference_timing_reports_images_per_second():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, kernel_size=1).eval()
    result = benchmark_inference(model, (64, 64), mode="slide", iterations=2, crop_size=(32, 32), stride=(16, 16))
    assert result["images_per_second"] > 0 and result["mode"] == "slide" and result["crop_size"] == [32, 32]
