"""Resuming compares the stored config with the new one: what cannot continue is refused in one
line naming the keys, every other change is logged and applied (none is silently ignored)."""

import logging
import shutil

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY_OVERRIDES
from recallseg.training.trainer import Trainer
from recallseg.errors import UserError
from recallseg.config.schema import validate_train_config


def trainer(run_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_OVERRIDES, "loss=recall", f"output_dir={run_dir}", *overrides])
    return Trainer(OmegaConf.create(validate_train_config(cfg)))


def resumed(run_dir, *overrides):
    """A trainer for ``run_dir`` with ``overrides``, after it loaded the stored state (as fit() does first)."""
    trainer_ = trainer(run_dir, "resume=auto", *overrides)
    trainer_._resume_state()
    return trainer_


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "run"
    trainer(run).fit()
    return run


def test_a_new_learning_rate_applies_and_is_logged(run_dir, caplog):
    with caplog.at_level(logging.INFO, logger="recallseg"):
        run = resumed(run_dir, "trainer.max_iters=4", "optimizer.lr=0.05")
    assert run.iteration == 2
    factor = run.scheduler.lr_lambdas[0](run.scheduler.last_epoch)
    assert 0 < factor < 1
    for group in run.optimizer.param_groups:
        assert float(group["lr"]) == pytest.approx(0.05 * factor) and group["initial_lr"] == 0.05
    assert "optimizer.lr changed from 0.001 to 0.05; the new value applies" in caplog.text
    assert "trainer.max_iters changed from 2 to 4; the new value applies" in caplog.text


@pytest.mark.slow
def test_a_new_batch_size_applies_to_the_resumed_training_and_is_logged(run_dir, tmp_path, caplog):
    shutil.copytree(run_dir, tmp_path / "run")  # fit() writes: leave the shared run as it is
    run = trainer(tmp_path / "run", "resume=auto", "trainer.batch_size=4", "trainer.max_iters=4", "trainer.stop_after=1")  # no validation
    batch_sizes, step = [], run.step
    run.step = lambda images, masks: batch_sizes.append((len(images), len(masks))) or step(images, masks)
    with caplog.at_level(logging.INFO, logger="recallseg"):
        run.fit()
    assert batch_sizes == [(4, 4)]  # iteration 3, the only one after the resume
    assert "trainer.batch_size changed from 2 to 4; the new value applies" in caplog.text


def test_another_recall_denominator_applies_and_is_logged(run_dir, caplog):
    with caplog.at_level(logging.INFO, logger="recallseg"):
        run = resumed(run_dir, "loss.denominator=union")
    assert run.criterion.denominator == "union" and run.criterion.ema_counts.shape[0] == 3
    assert "loss.denominator changed from 'class' to 'union'; the new value applies" in caplog.text


@pytest.mark.parametrize("override, named", [
    ("loss=ce", "loss._target_ recallseg.losses.recall.RecallLoss -> recallseg.losses.cross_entropy.CrossEntropyLoss"),
    ("model.encoder_name=resnet34", "model.encoder_name resnet18 -> resnet34 (another network)"),
    ("optimizer._target_=torch.optim.SGD", "optimizer._target_ torch.optim.AdamW -> torch.optim.SGD"),
])  # fmt: skip
def test_what_cannot_continue_is_refused_naming_the_key(run_dir, override, named):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").iterdir())
    with pytest.raises(UserError) as info:
        resumed(run_dir, override)
    message = str(info.value)
    assert "cannot continue" in message and named in message and "\n" not in message
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").iterdir()) == before


def test_a_weight_that_is_not_finite_is_never_saved(tmp_path):
    run = trainer(tmp_path / "fresh")
    name, tensor = next((k, v) for k, v in run.model.state_dict().items() if v.is_floating_point())
    tensor.view(-1)[0] = float("nan")
    with pytest.raises(FloatingPointError, match=f"model tensor '{name}' is not finite at iteration 0; not saving last.pt"):
        run._save("last.pt")
    assert not (tmp_path / "fresh" / "checkpoints" / "last.pt").exists()


# -- the rules alone (checkpoints.resume_changes), on plain configs --------------------------

STORED = {
    "loss": {"_target_": "recallseg.losses.recall.RecallLoss"},
    "model": {"_target_": "smp.DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": "imagenet", "mean": [0.5]},
    "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.001},
    "trainer": {"max_iters": 2, "stop_after": 1, "num_workers": 2},
    "output_dir": "/runs/a", "resume": None,
}


def test_config_changes_name_every_changed_key_except_those_of_one_invocation():
    new = {
        **STORED,
        "model": {**STORED["model"], "encoder_weights": None, "mean": [0.4]},
        "optimizer": {**STORED["optimizer"], "lr": 0.05},
        "trainer": {"max_iters": 4, "stop_after": 3, "num_workers": 0},
        "output_dir": "/runs/b", "resume": "auto", "seed": 1,
    }  # fmt: skip
    from recallseg.checkpoints.resume_changes import config_changes

    assert config_changes(STORED, new) == {
        "model.encoder_weights": ("imagenet", None),
        "model.mean": ([0.5], [0.4]),
        "optimizer.lr": (0.001, 0.05),
        "seed": ("<unset>", 1),
        "trainer.max_iters": (2, 4),
    }


def test_refused_changes_name_another_loss_classes_network_or_optimizer_and_nothing_else():
    from recallseg.checkpoints.resume_changes import refused_changes

    same_network = {**STORED, "model": {**STORED["model"], "encoder_weights": None, "mean": [0.4]}}
    assert refused_changes(STORED, same_network, ["road", "car"], ["road", "car"]) == []
    new = {
        "loss": {"_target_": "recallseg.losses.cross_entropy.CrossEntropyLoss"},
        "model": {**STORED["model"], "encoder_name": "resnet34"},
        "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.001},
    }
    assert refused_changes(STORED, new, ["road", "car"], ["road", "bus"]) == [
        "loss._target_ recallseg.losses.recall.RecallLoss -> recallseg.losses.cross_entropy.CrossEntropyLoss (another loss type)",
        "classes ['road', 'car'] -> ['road', 'bus']",
        "model.encoder_name resnet18 -> resnet34 (another network)",
        "optimizer._target_ torch.optim.AdamW -> torch.optim.SGD",
    ]


def test_new_optimizer_options_replace_the_stored_ones_and_the_learning_rate_becomes_the_schedules_base():
    import torch

    from recallseg.checkpoints.resume_changes import apply_optimizer_options

    parameters = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.AdamW([{"params": parameters[:1]}, {"params": parameters[1:]}], lr=0.001, betas=(0.9, 0.999), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    apply_optimizer_options(optimizer, scheduler, {"_target_": "torch.optim.AdamW", "lr": 0.2, "betas": [0.8, 0.9], "weight_decay": 0.1, "nesterov": True})
    assert scheduler.base_lrs == [0.2, 0.2]
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.2 / 4, rel=1e-12)
        assert (group["initial_lr"], group["betas"], group["weight_decay"]) == (0.2, (0.8, 0.9), 0.1)
        assert "nesterov" not in group  # an option the optimizer does not have is not planted in its groups
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.2 / 5, 0.2 / 5], rel=1e-12)
