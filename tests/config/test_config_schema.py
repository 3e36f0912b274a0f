"""The config schema: every user mistake is one line, exit 2, and nothing is written."""

import pytest

from conftest import run_entry_point
from recallseg.config.compose import compose_checked
from recallseg.errors import ConfigError
from recallseg.config.schema import validate_train_config


def check(*overrides):
    return validate_train_config(compose_checked("train", list(overrides)))


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("trainer.max_iter=5", "trainer.max_iter", "trainer.max_iters"),  # Hydra's own refusal, reworded
        ("+trainer.max_iter=5", "trainer.max_iter", "trainer.max_iters"),  # added with +: refused too
        ("+evaluation.batchsize=2", "evaluation.batchsize", "evaluation.batch_size"),
        ("optimizer.lrr=1", "optimizer.lrr", "optimizer.lr"),
        ("loss=recal", "loss=recal", "loss=recall"),
        ("trainer.amp=bf17", "trainer.amp", "trainer.amp=bf16"),
    ],
)
def test_unknown_keys_and_choices_name_the_nearest(override, key, hint):
    with pytest.raises(ConfigError) as info:
        check(override)
    assert info.value.key == key and hint in str(info.value)


@pytest.mark.parametrize(
    "override",
    ["trainer.max_iters=0", "trainer.val_interval=0", "trainer.batch_size=0", "trainer.log_interval=-1", "trainer.num_workers=-1",
     "trainer.batch_size=two", "trainer.monitor=val/loss", "inference.mode=tiles", "inference.scales=[]", "inference.crop_size=[0,4]",
     "inference.stride=[600,800]", "evaluation.batch_size=0", "seed=-1", "trainer.stop_after=0", "trainer.deterministic=maybe"],
)
def test_out_of_range_and_wrong_types_are_refused(override):
    with pytest.raises(ConfigError) as info:
        check(override)
    assert info.value.key.split("[")[0] == override.split("=")[0]
    assert "must be" in str(info.value) or "larger" in str(info.value)


def test_the_default_config_and_every_loss_pass():
    from recallseg.config.files import group_options

    for loss in group_options("loss"):
        assert check(f"loss={loss}")["loss"]["_target_"].startswith("recallseg.losses.")


def test_cuda_on_a_machine_without_it_is_refused_up_front():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device"):
        check("trainer.device=cuda")


def test_a_mistake_is_one_line_exit_2_and_creates_no_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry_point("train.py", "+trainer.max_iter=5", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: trainer.max_iter: is not a known option; did you mean trainer.max_iters?"]
    assert not run_dir.exists()
