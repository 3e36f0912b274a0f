"""A resumed run's config is its checkpoint's: only what the command line names again replaces a
stored value (checkpoints.resume_config), taken from Hydra's composition of that command line."""

import copy

import pytest

from conftest import TINY_OVERRIDES
from recallseg.checkpoints.format import CheckpointError
from recallseg.checkpoints.resume_config import resumed_config
from recallseg.config.compose import compose_checked, interpolation_links
from recallseg.config.schema import validate_train_config

# The run as it was started: far from the defaults.
FIRST = [*TINY_OVERRIDES, "loss=recall", "loss.statistics=ema", "optimizer.lr=0.01", "seed=3", "trainer.stop_after=1", "output_dir=/runs/first"]


def composed(*typed):
    """This command line's config, as ``run_training`` has it (validated, resolved)."""
    return validate_train_config(compose_checked("train", list(typed)))


@pytest.fixture(scope="module")
def stored():
    return composed(*FIRST)


def resume(stored, *typed):
    typed = ["resume=auto", "output_dir=/runs/again", *typed]
    links = interpolation_links(compose_checked("train", typed))
    return resumed_config(copy.deepcopy(stored), composed(*typed), typed, "last.pt", links)


def test_what_is_not_typed_again_is_the_stored_runs_and_each_invocation_keeps_its_own_place(stored):
    config, named = resume(stored)
    assert config["trainer"] == {**stored["trainer"], "stop_after": None}  # stop_after: this invocation's (none)
    assert (config["output_dir"], config["resume"]) == ("/runs/again", "auto")
    assert {k: v for k, v in config.items() if k not in ("trainer", "output_dir", "resume")} == {
        k: v for k, v in stored.items() if k not in ("trainer", "output_dir", "resume")
    }
    assert named == frozenset()  # every target in it is the checkpoint's


def test_a_key_that_follows_a_typed_key_in_the_config_follows_it_unless_the_run_set_it_apart(stored):
    assert stored["evaluation"]["num_workers"] == stored["trainer"]["num_workers"]  # ${trainer.num_workers}
    config, _ = resume(stored, "trainer.num_workers=3")
    assert config["trainer"]["num_workers"] == config["evaluation"]["num_workers"] == 3
    apart = {**stored, "evaluation": {**stored["evaluation"], "num_workers": stored["trainer"]["num_workers"] + 2}}
    config, _ = resume(apart, "trainer.num_workers=3")
    assert config["evaluation"]["num_workers"] == apart["evaluation"]["num_workers"]
    config, _ = resume(stored, "evaluation.num_workers=2")  # the follower typed: the leader stays
    assert (config["trainer"]["num_workers"], config["evaluation"]["num_workers"]) == (stored["trainer"]["num_workers"], 2)


def test_a_key_typed_again_replaces_the_stored_value_and_only_that_key(stored):
    config, _ = resume(stored, "trainer.max_iters=6", "trainer.stop_after=2", "optimizer.lr=0.005")
    assert config["trainer"] == {**stored["trainer"], "max_iters": 6, "stop_after": 2}
    assert config["optimizer"] == {**stored["optimizer"], "lr": 0.005}
    assert config["dataset"] == stored["dataset"] and config["loss"] == stored["loss"]


def test_keys_added_and_removed_on_the_command_line(stored):
    config, _ = resume(stored, "+model.decoder_aspp_dropout=0.5", "~model.encoder_output_stride", "++dataset.noise=0.25")
    assert config["model"]["decoder_aspp_dropout"] == 0.5 and "encoder_output_stride" not in config["model"]
    assert config["dataset"] == {**stored["dataset"], "noise": 0.25}


def test_a_group_typed_again_replaces_its_whole_section(stored):
    config, named = resume(stored, "loss=ce")
    assert config["loss"] == composed("loss=ce")["loss"]  # no stored recall option merged into it
    assert "recallseg.losses.cross_entropy.CrossEntropyLoss" in named
    assert config["optimizer"] == stored["optimizer"] and config["trainer"]["max_iters"] == stored["trainer"]["max_iters"]


def test_a_group_that_sets_other_sections_sets_the_keys_it_changes(stored):
    config, _ = resume(stored, "protocol=paper")
    paper = composed("protocol=paper", "loss=recall")
    assert config["protocol"] == "paper"
    assert config["loss"] == paper["loss"]  # the protocol's file chose another loss_protocol@loss option
    assert config["trainer"] == {**stored["trainer"], "stop_after": None} and config["dataset"] == stored["dataset"]


def test_a_typed_target_is_the_users(stored):
    _, named = resume(stored, "optimizer._target_=torch.optim.SGD")
    assert named == {"torch.optim.SGD"}


def test_a_fixed_key_an_older_checkpoint_lacks_takes_its_default(stored):
    older = copy.deepcopy(stored)
    del older["trainer"]["cuda_graph"], older["protocol"]
    config, _ = resumed_config(older, composed("resume=auto", "output_dir=/runs/again"), ["resume=auto"], "last.pt")
    assert config["trainer"]["cuda_graph"] is False and config["protocol"] == "recallseg"
    assert config["trainer"]["max_iters"] == stored["trainer"]["max_iters"]


@pytest.mark.parametrize("config", [None, {}, ["a"]])
def test_a_checkpoint_without_a_config_is_refused(config):
    with pytest.raises(CheckpointError, match="holds no config"):
        resumed_config(config, composed("resume=auto", "output_dir=/runs/again"), [], "last.pt")
