"""Stopping and resuming in-process (the default suite's counterpart of the slow, subprocess
checks in test_resilience.py and test_stopping.py): a run stopped by trainer.stop_after or by a
signal and continued with resume=auto ends exactly where an uninterrupted run ends, random
states (numpy's included) and the loss's state included."""

import os
import random
import signal

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY_OVERRIDES
from recallseg.checkpoints.format import load_checkpoint, save_checkpoint
from recallseg.runtime.random_state import rng_state, set_rng_state
from recallseg.training.trainer import Trainer
from recallseg.config.schema import validate_train_config

# 3 iterations, validated once at the end; dropout makes torch's random state matter, the EMA
# recall loss carries state of its own.
RUN = [
    *[o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval", "dataset.num_val"))],
    "dataset.num_val=2", "trainer.max_iters=3", "trainer.val_interval=100",
    "loss=recall", "loss.statistics=ema", "+model.decoder_aspp_dropout=0.5",
]  # fmt: skip


def trainer(run_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*RUN, f"output_dir={run_dir}", *overrides])
    return Trainer(OmegaConf.create(validate_train_config(cfg)))


def signal_before_iteration(stop_at):
    """A step that sends this process SIGTERM during iteration ``stop_at`` (as a batch scheduler would)."""
    real = Trainer.step

    def step(self, images, masks):
        if self.iteration + 1 == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, images, masks)

    return step


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Final checkpoints of three runs of 3 iterations: straight, stopped by trainer.stop_after=1 and
    resumed, stopped by SIGTERM in iteration 2 and resumed; and the numbers a component drawing from
    numpy and python's random module draws in each iteration."""
    root = tmp_path_factory.mktemp("resume")
    draws = {}
    real_step = Trainer.step

    def drawing_step(self, images, masks):  # a user component (loss, augmentation) drawing random numbers
        draws.setdefault(self.cfg.output_dir, []).append((self.iteration + 1, np.random.random(), random.random()))
        return real_step(self, images, masks)

    stops, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # a few small convolutions: threads only contend on a shared 2-core machine
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Trainer, "step", drawing_step)
            trainer(root / "straight").fit()
            trainer(root / "stop_after", "trainer.stop_after=1").fit()
            stops["stop_after"] = load_checkpoint(root / "stop_after" / "checkpoints" / "last.pt")["iteration"]
            trainer(root / "stop_after", "resume=auto").fit()
            patch.setattr(Trainer, "step", signal_before_iteration(2))
            with pytest.raises(SystemExit) as exit_:
                trainer(root / "signal").fit()
            stops["signal"] = (exit_.value.code, load_checkpoint(root / "signal" / "checkpoints" / "last.pt")["iteration"])
            patch.setattr(Trainer, "step", real_step)
            trainer(root / "signal", "resume=auto").fit()
    finally:
        torch.set_num_threads(threads)
    last = {name: load_checkpoint(root / name / "checkpoints" / "last.pt") for name in ("straight", "stop_after", "signal")}
    return last, {name: draws.get(str(root / name)) for name in last}, stops


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_resume_restores_numpy_random_state():
    np.random.seed(1)
    state = rng_state()
    first = np.random.random(4)
    np.random.seed(2)  # as a resumed process starts: seeded afresh
    set_rng_state(state)
    assert np.array_equal(np.random.random(4), first)


def test_a_random_state_restores_from_a_saved_checkpoint(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    save_checkpoint({"model": {}, "rng": rng_state()}, tmp_path / "last.pt")
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(4), np.random.seed(4), torch.manual_seed(4)
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])  # weights_only=True: plain data and tensors
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected


def test_stop_after_and_a_signal_stop_the_fit_and_save_last_pt_at_that_iteration(runs):
    _, _, stops = runs
    assert stops["stop_after"] == 1
    assert stops["signal"] == (143, 2)  # SIGTERM: saved after the step it arrived in, exit status 128 + 15


@pytest.mark.parametrize("interrupted", ["stop_after", "signal"])
def test_a_stopped_and_resumed_fit_ends_with_the_weights_of_an_uninterrupted_one(runs, interrupted):
    last, _, _ = runs
    assert last["straight"]["iteration"] == last[interrupted]["iteration"] == 3
    assert_same_tensors(last["straight"]["model"], last[interrupted]["model"])
    assert_same_tensors(last["straight"]["loss"], last[interrupted]["loss"])  # the EMA recall statistics
    for a, b in zip(last["straight"]["optimizer"]["state"].values(), last[interrupted]["optimizer"]["state"].values()):
        assert_same_tensors(a, b)


def test_a_resumed_fit_continues_numpys_and_pythons_random_streams(runs):
    _, draws, _ = runs
    assert [d[0] for d in draws["stop_after"]] == [1, 2, 3]  # iteration 1, then 2 and 3 after the resume
    assert draws["stop_after"] == draws["straight"]


def test_a_resumed_fit_records_itself_and_keeps_the_record_of_the_run_it_continues(runs):
    last, _, _ = runs
    assert "earlier_runs" not in last["straight"]["run"]
    record = last["stop_after"]["run"]
    assert record["kind"] == "train" and record["resumed_at"] == 1
    assert [run["kind"] for run in record["earlier_runs"]] == ["train"] and "earlier_runs" not in record["earlier_runs"][0]
    assert record["earlier_runs"][0]["data"] == record["data"]  # (its config differs: trainer.stop_after=1)
