"""What would fail later is refused with the config, in one line: numbers that are not finite,
image sizes the network cannot take, and inference that cannot fit the device's memory."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONFIG_DIR, TINY_OVERRIDES
from recallseg.config.schema import validate_train_config
from recallseg.errors import ConfigError


def composed(*overrides, run_dir="/tmp/unused-run"):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY_OVERRIDES, f"output_dir={run_dir}", *overrides])


def refusal_of_a_run(tmp_path, capsys, *overrides):
    """Run the training task in process: the one line it prints and that no checkpoint exists."""
    from recallseg.commands.train import run_training

    with pytest.raises(SystemExit) as exit_:
        run_training(composed(*overrides, run_dir=str(tmp_path / "run")))
    assert exit_.value.code == 2
    assert not list((tmp_path / "run").rglob("*.pt"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("override, key", [("scheduler.power=nan", "scheduler.power"), ("optimizer.lr=inf", "optimizer.lr"), ("dataset.noise=-inf", "dataset.noise")])
def test_a_number_that_is_not_finite_is_refused_naming_its_key(override, key):
    with pytest.raises(ConfigError) as info:
        validate_train_config(composed(override))
    assert info.value.key == key and "must be finite" in info.value.problem


def test_a_schedule_built_in_python_refuses_nan_power():
    from recallseg.training.optim import PolySchedule

    with pytest.raises(ConfigError, match="power and warmup_iters must be >= 0 and finite"):
        PolySchedule(power=math.nan)


def test_a_size_divisor_the_network_cannot_take_is_refused_before_the_first_step(tmp_path, capsys):
    line = refusal_of_a_run(tmp_path, capsys, "dataset.height=50", "+dataset.size_divisor=7")
    assert line == (
        "error: dataset.size_divisor: 7 pads frames to multiples of 7, but the model needs sides divisible by 16 (its output stride); "
        "set dataset.size_divisor=16 (or a multiple of it)"
    )


def test_frames_the_network_cannot_take_without_a_size_divisor_are_refused(tmp_path):
    from recallseg.models import build_model
    from recallseg.models.builder import input_divisor
    from recallseg.pipeline.builder import build_dataset, check_frame_sizes

    cfg = {"_target_": "recallseg.data.SyntheticStreets", "height": 50, "width": 64, "num_train": 2, "train_transform": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]}
    model = build_model(composed()["model"], 9)
    with pytest.raises(ConfigError, match=r"dataset.size_divisor: is null and training gets 50x64 \(HxW\) frames .* divisible by 16"):
        check_frame_sizes(cfg, build_dataset(cfg, "train"), input_divisor(model))
    check_frame_sizes({**cfg, "height": 48}, build_dataset({**cfg, "height": 48}, "train"), input_divisor(model))


def test_whole_image_inference_of_an_8000_pixel_square_over_the_memory_is_refused_and_slide_fits(monkeypatch):
    from recallseg.evaluation import memory
    from recallseg.evaluation.inference import InferenceSettings

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 9, 1))  # ~270 bytes a pixel
    monkeypatch.setattr(memory, "available_memory", lambda device: 6 * 2**30)
    with pytest.raises(ConfigError) as info:
        memory.check_inference_memory(model, InferenceSettings(mode="whole"), [(1024, 2048), (8000, 8000)], torch.device("cpu"))
    assert info.value.key == "inference.mode" and info.value.fix.startswith("use inference.mode=slide")
    assert "whole inference of the largest image (8000x8000, HxW) needs at least" in info.value.problem
    memory.check_inference_memory(model, InferenceSettings(mode="slide"), [(8000, 8000)], torch.device("cpu"))


def test_a_run_whose_validation_cannot_fit_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from recallseg.evaluation import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 2**20)
    # The measurement is the test above's; here, that a run asks for it and stops in one line.
    monkeypatch.setattr(memory.ForwardMemory, "measure", classmethod(lambda cls, *args: cls(per_pixel=400.0)))
    line = refusal_of_a_run(tmp_path, capsys)
    assert line.startswith("error: inference.mode: whole inference of the largest val frame (64x64, HxW) needs at least")
    assert line.endswith("which has 1 MiB available; use inference.mode=slide (windows of inference.crop_size, a few at a time)")
