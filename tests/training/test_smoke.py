"""``trainer.smoke=true``: a few iterations, one validation and a save on a few small samples, the
changes logged; a smoke run neither resumes nor is resumed."""

import logging

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, read_json
from recallseg.checkpoints.format import load_checkpoint
from recallseg.commands.train import run_training
from recallseg.config.schema import validate_train_config
from recallseg.errors import ConfigError
from recallseg.training.smoke import ITERATIONS, smoke_config, smoke_subset

SMALL_MODEL = ["model.arch=Unet", "model.encoder_name=mobilenet_v2", "~model.encoder_output_stride", "+model.encoder_depth=3", "+model.decoder_channels=[16,8,8]"]


def composed(*overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["output_dir=unused", *overrides])


def validated(*overrides):
    return OmegaConf.create(validate_train_config(composed(*overrides)))


def tensorboard_image_sizes(run_dir) -> dict[str, tuple[int, int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return {tag: (events.Images(tag)[-1].height, events.Images(tag)[-1].width) for tag in events.Tags()["images"]}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: threads only contend on a shared machine
    yield
    torch.set_num_threads(threads)


def test_a_smoke_run_trains_a_few_iterations_validates_once_saves_and_is_not_resumed(tmp_path, caplog, capsys, monkeypatch, one_thread):
    from recallseg.training.tensorboard_images import ValidationPictures

    monkeypatch.setattr(ValidationPictures, "log", lambda *args, **kwargs: None)  # TensorBoard charts: most of a validation's time
    monkeypatch.setenv("RECALLSEG_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="recallseg")
    run_training(composed("trainer.smoke=true", "trainer.device=cpu", "model.encoder_weights=null", *SMALL_MODEL, f"output_dir={run_dir}"))
    said = [r.getMessage() for r in caplog.records]
    smoke_line = next(line for line in said if line.startswith("smoke run"))
    assert "trainer.max_iters 400 -> 3" in smoke_line and "dataset.num_train 2000 -> 8" in smoke_line
    assert len([line for line in said if line.startswith("val @")]) == 1
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["iteration"] == ITERATIONS
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["iteration"] == ITERATIONS and last["config"]["trainer"]["smoke"] is True
    assert last["config"]["dataset"]["height"] == 64 and "optimizer" not in load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert {"train/recall_weight_heatmap", "train/batch_recall_heatmap"} <= set(tensorboard_image_sizes(run_dir))  # drawn at the validation
    # A full run does not continue it, and a smoke run does not continue anything.
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        run_training(composed("resume=auto", "trainer.device=cpu", "model.encoder_weights=null", *SMALL_MODEL, f"output_dir={run_dir}"))
    assert ended.value.code == 2 and "error: trainer.smoke: a smoke run is never continued" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:  # nor by typing the setting away
        run_training(
            composed("resume=auto", "trainer.smoke=false", "trainer.device=cpu", "model.encoder_weights=null", *SMALL_MODEL, f"output_dir={run_dir}"),
            typed=["trainer.smoke=false"],
        )
    assert ended.value.code == 2 and "trainer.smoke true (a smoke run's checkpoint" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="a smoke run is never continued"):
        smoke_config(validated("trainer.smoke=true", "resume=auto"))


def test_smoke_settings_shrink_a_file_datasets_crop_and_leave_other_runs_alone():
    config, changes = smoke_config(validated("dataset=cityscapes", "dataset.cache=true", "trainer.smoke=true"))
    assert config.trainer.max_iters == ITERATIONS and config.trainer.val_interval == ITERATIONS and config.trainer.batch_size == 2
    assert config.dataset.cache is False and "dataset.cache True -> False" in changes
    crop = config.dataset.train_transform[0]
    assert (crop.height, crop.width) == (256, 256) and "dataset.train_transform[0].height 768 -> 256" in changes
    assert config.loss == validated("dataset=cityscapes").loss  # the user's parts stay
    unchanged = validated("dataset=cityscapes")
    assert smoke_config(unchanged) == (unchanged, [])


def test_smoke_keeps_a_file_datasets_first_samples():
    class Files:
        samples = list(range(20))

    files = Files()
    assert smoke_subset(files, "val") == ["val samples 20 -> 2"] and files.samples == [0, 1]
    assert smoke_subset(files, "train") == [] and files.samples == [0, 1]  # fewer than it keeps
    assert smoke_subset(object(), "train") == []  # no sample list: shrunk by its options
