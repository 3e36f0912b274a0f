"""A resumed weighted_ce run trains with the class weights it logs: those of its own config and
training split, as every other resumed setting; the checkpoint's are named when they differ."""

import logging

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY_OVERRIDES
from recallseg.checkpoints.format import save_checkpoint
from recallseg.config.schema import validate_train_config
from recallseg.training.trainer import Trainer


def trainer(run_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_OVERRIDES, "loss=weighted_ce", f"output_dir={run_dir}", f"paths.cache_dir={run_dir.parent / 'cache'}", *overrides])
    return Trainer(OmegaConf.create(validate_train_config(cfg)))


def test_a_resumed_run_trains_with_the_weights_of_its_own_statistics_and_says_so(tmp_path, caplog):
    first = trainer(tmp_path / "run", "dataset.num_train=8")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    save_checkpoint(first.state_dict(), tmp_path / "run" / "checkpoints" / "last.pt")
    with caplog.at_level(logging.INFO):
        resumed = trainer(tmp_path / "run", "dataset.num_train=4", "resume=auto")
        built = resumed.criterion.weights.clone()
        resumed.choose_start()
    assert not torch.equal(built, first.criterion.weights)  # the training split changed, and with it the statistics
    assert torch.equal(resumed.criterion.weights, built)
    logged = [r.getMessage() for r in caplog.records if "class weights from the training split" in r.getMessage()][-1]
    assert logged.endswith(str([round(float(w), 4) for w in built]))
    assert any(r.getMessage().startswith("resume: the loss's weights differ from the checkpoint's") for r in caplog.records)
