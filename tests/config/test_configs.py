"""Every YAML in configs/ composes, and what it describes can be built."""

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY_OVERRIDES
from recallseg.pipeline import build_dataset
from recallseg.training.optim import build_optimizer, build_scheduler
from recallseg.losses import LossContext, build_loss
from recallseg.models import build_model
from recallseg.config.schema import validate_train_config

# loss_protocol holds per-loss settings that train.yaml picks by ${protocol}_${loss}, never chosen directly.
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("_") and p.name != "loss_protocol")


def options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_train(*overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["output_dir=/tmp/unused", *overrides])


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_into_a_valid_training_config_holding_its_keys(group, option):
    cfg = compose_train(f"{group}={option}")
    validate_train_config(cfg)  # every interpolation resolves and every fixed section fits the schema
    if "@package _global_" not in (CONFIG_DIR / group / f"{option}.yaml").read_text():
        own = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml"), resolve=False)
        composed = OmegaConf.to_container(cfg[group], resolve=False)
        assert {key: composed.get(key) for key in own if key != "defaults"} == {k: v for k, v in own.items() if k != "defaults"}


def test_eval_config_requires_a_checkpoint():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["output_dir=/tmp/unused"])
    assert OmegaConf.is_missing(cfg, "checkpoint")


@pytest.mark.parametrize("loss", options("loss"))
def test_every_loss_config_builds(loss):
    import torch

    cfg = compose_train(f"loss={loss}")
    # The training split's pixel counts and, per class, the labelled pixels of the images holding it.
    statistics = SimpleNamespace(pixel_counts=torch.tensor([50, 30, 10, 5, 5, 1, 1, 1, 1]), image_pixels=torch.tensor([60, 60, 40, 20, 20, 9, 9, 9, 9]))
    criterion = build_loss(cfg.loss, LossContext(9, 255, class_statistics=lambda: statistics))
    assert type(criterion).__module__ + "." + type(criterion).__qualname__ == cfg.loss._target_
    logits = torch.randn(2, 9, 8, 8, requires_grad=True)
    value = criterion(logits, torch.randint(0, 9, (2, 8, 8)))
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_optimizer_and_scheduler_builds(optimizer, scheduler):
    import torch

    cfg = compose_train(f"optimizer={optimizer}", f"scheduler={scheduler}")
    opt = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    assert type(opt).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    assert opt.defaults["lr"] == cfg.optimizer.lr and opt.defaults["weight_decay"] == cfg.optimizer.weight_decay
    schedule = build_scheduler(cfg.scheduler, opt, max_iters=400)
    for _ in range(100):
        opt.step()
        schedule.step()
    factor = (1 - 100 / 400) ** cfg.scheduler.power if "power" in cfg.scheduler else 1.0  # poly, or constant
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr * factor, rel=1e-12)


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_builds(model):
    import torch

    cfg = compose_train(f"model={model}", "model.encoder_weights=null")
    network = build_model(cfg.model, 4).eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_synthetic_dataset_config_builds_with_its_transforms():
    cfg = compose_train(*TINY_OVERRIDES)
    train = build_dataset(cfg.dataset, "train")
    val = build_dataset(cfg.dataset, "val")
    image, mask = train[(0, 123)]
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert len(val) == 4 and train.transform is not None and val.transform is None


def test_the_dataset_keys_the_schema_checks_are_the_ones_the_builder_consumes():
    from recallseg.config.schema import DATASET_RESERVED
    from recallseg.pipeline.builder import dataset_options
    from recallseg.pipeline.class_statistics import statistics_config

    cfg = {"_target_": "my_project.data.Mine", "root": "/data", **{key: None for key in DATASET_RESERVED}}
    assert dataset_options(cfg) == {"root": "/data"}
    # the statistics' identity: the class, its options and train_split (the key it always had)
    assert statistics_config(cfg) == {"_target_": "my_project.data.Mine", "root": "/data", "train_split": None}


def test_overrides_reach_the_config():
    cfg = compose_train("loss=ce", "trainer.max_iters=7", "trainer.batch_size=3", "seed=5", "dataset.height=32")
    assert cfg.loss._target_.endswith("CrossEntropyLoss") and cfg.trainer.max_iters == 7 and cfg.trainer.batch_size == 3
    assert cfg.seed == 5 and cfg.dataset.seed == 5 and cfg.dataset.height == 32


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "loss_protocol").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_loss_protocol_file_names_a_protocol_and_a_loss_and_applies(path):
    protocol, loss = path.stem.split("_", 1)
    assert protocol in options("protocol") and loss in options("loss")
    cfg = compose_train(f"protocol={protocol}", f"loss={loss}")
    for key, value in OmegaConf.load(path).items():
        assert cfg.loss[key] == value, key
