"""Each guard over a checkpoint's stored config, alone: every test gives an input that only the
guard it names catches (the guards overlap, so the end-to-end tests in test_checkpoint_as_data.py
would still pass without any one of them), and asserts that guard's own message.

- ``checkpoint_config`` (engine.checkpoint_config): checkpoint shape, sections with a _target_,
  the text of stored targets, trainer.device/amp/channels_last and model mean/std/channel_order;
- ``construct.build(trusted=False)``: the text of targets before import (check_untrusted_text)
  and the imported object after (check_trusted_object).
"""

import copy
import re
import sys
import textwrap

import pytest
import torch

from conftest import TINY_OVERRIDES
from model_checkpoints import write_checkpoint
from recallseg.config.construct import build, check_trusted_object, transform_kinds
from recallseg.data.base import SegmentationDataset
from recallseg.data.synthetic import CLASSES
from recallseg.checkpoints.format import CheckpointError
from recallseg.checkpoints.stored_config import checkpoint_config
from recallseg.errors import ConfigError


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("guards") / "clean.pt", CLASSES, TINY_OVERRIDES)
    return torch.load(path, weights_only=True)


def stored(tmp_path, clean, change):
    """A copy of the clean checkpoint whose state (config included) ``change`` edited."""
    state = copy.deepcopy(clean)
    change(state)
    torch.save(state, tmp_path / "tampered.pt")
    return tmp_path / "tampered.pt"


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """``planted_module``: leaves a marker when imported, and re-exports recallseg's SyntheticStreets."""
    marker = tmp_path / "it_ran"
    (tmp_path / "planted_module.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")
        from recallseg.data.synthetic import SyntheticStreets
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("planted_module", None)
    yield marker
    sys.modules.pop("planted_module", None)


# -- checkpoint_config --------------------------------------------------------------------


def test_checkpoint_config_refuses_a_checkpoint_without_a_stored_config(tmp_path, clean):
    path = stored(tmp_path, clean, lambda state: state.pop("config"))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: it has no model weights or config; give a checkpoint written by recallseg train")):
        checkpoint_config(path)


def test_checkpoint_config_refuses_a_checkpoint_without_model_weights(tmp_path, clean):
    path = stored(tmp_path, clean, lambda state: state.pop("model"))
    with pytest.raises(CheckpointError) as info:
        checkpoint_config(path)
    assert str(info.value) == f"{path}: it has no model weights or config; give a checkpoint written by recallseg train"


def test_overrides_replace_add_and_remove_keys_of_the_stored_sections_only():
    """``~key`` removes a key (and is a no-op for an absent one); sections an evaluation does not use are dropped."""
    from recallseg.checkpoints.stored_config import apply_overrides

    stored_config = {
        "dataset": {"_target_": "recallseg.data.synthetic.SyntheticStreets", "noise": 0.1, "size": 5},
        "optimizer": {"_target_": "torch.optim.SGD", "lr": 1.0},
    }
    config, named = apply_overrides(stored_config, ["~dataset.noise", "~dataset.absent", "dataset.size=7", "+dataset.extra=${dataset.size}"])
    assert config == {"dataset": {"_target_": "recallseg.data.synthetic.SyntheticStreets", "size": 7, "extra": 7}}
    assert named == set()


@pytest.mark.parametrize("section", ["dataset", "model"])
def test_checkpoint_config_refuses_a_stored_section_without_a_target(tmp_path, clean, section):
    path = stored(tmp_path, clean, lambda state: state["config"][section].pop("_target_"))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: its stored config has no {section} section with a _target_")):
        checkpoint_config(path)


def test_checkpoint_config_refuses_a_foreign_stored_target_without_importing_it(tmp_path, clean, planted):
    path = stored(tmp_path, clean, lambda state: state["config"]["dataset"].update({"_target_": "planted_module.SyntheticStreets"}))
    with pytest.raises(ConfigError) as info:
        checkpoint_config(path)
    assert str(info.value) == (
        "dataset._target_: the stored config names 'planted_module.SyntheticStreets', which is not part of recallseg, "
        "segmentation-models-pytorch, albumentations or torch.optim, and recallseg never imports or calls what a checkpoint names; "
        "if you trust it, name it yourself for this run: dataset._target_=planted_module.SyntheticStreets"
    )
    assert not planted.exists()
    # Named by the user for this run, it is theirs: the guard lets it through.
    _, config, named = checkpoint_config(path, ["dataset._target_=planted_module.SyntheticStreets"])
    assert config["dataset"]["_target_"] in named


@pytest.mark.parametrize("key, value, message", [
    ("device", "gpu", "trainer.device: got 'gpu'; it must be one of auto, cpu, cuda; did you mean trainer.device=cpu?"),
    ("amp", "fp32", "trainer.amp: got 'fp32'; it must be one of auto, bf16, fp16, off; did you mean trainer.amp=fp16?"),
    ("channels_last", "yes", "trainer.channels_last: got 'yes'; it must be one of auto, true, false; set trainer.channels_last=auto"),
], ids=["device", "amp", "channels_last"])  # fmt: skip
def test_checkpoint_config_refuses_a_stored_runtime_setting_out_of_its_choices(tmp_path, clean, key, value, message):
    path = stored(tmp_path, clean, lambda state: state["config"]["trainer"].update({key: value}))
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        checkpoint_config(path)


@pytest.mark.parametrize("key, value, message", [
    ("mean", [0.5, 0.5], "model.mean: got 2 values [0.5, 0.5]; it must be a list of 3 floats; give 3 values"),
    ("std", [0.2, 0.0, 0.2], "model.std[1]: got 0.0; it must be a list of 3 positive floats; fix that entry"),
    ("channel_order", "rgba", "model.channel_order: got 'rgba'; it must be one of rgb, bgr; did you mean model.channel_order=rgb?"),
], ids=["mean", "std", "channel_order"])  # fmt: skip
def test_checkpoint_config_refuses_a_stored_model_input_setting(tmp_path, clean, key, value, message):
    path = stored(tmp_path, clean, lambda state: state["config"]["model"].update({key: value}))
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        checkpoint_config(path)


# -- construct.build of an untrusted section ----------------------------------------------


def test_an_untrusted_target_outside_the_trusted_packages_is_refused_by_its_text(planted):
    """planted_module re-exports a recallseg dataset: the imported object would pass as trusted,
    so only the text check stands between the checkpoint and importing (running) the module."""
    with pytest.raises(ConfigError, match=re.escape("dataset._target_: the stored config names 'planted_module.SyntheticStreets', which is not part of")):
        build({"_target_": "planted_module.SyntheticStreets"}, "dataset", kind=SegmentationDataset, trusted=False, split="val", transform=None)
    assert not planted.exists() and "planted_module" not in sys.modules


def test_an_untrusted_target_through_a_private_attribute_is_refused_by_its_text():
    # Resolves to recallseg's own SegmentationDataset, a class of the right kind.
    target = "recallseg.data.synthetic.SyntheticStreets.__base__"
    with pytest.raises(ConfigError, match=re.escape(f"dataset._target_: the stored config names {target!r}, which is not part of")):
        build({"_target_": target}, "dataset", kind=SegmentationDataset, trusted=False, split="val", transform=None)


def test_an_untrusted_target_of_the_wrong_kind_is_refused_after_import():
    """albumentations passes the text check; a transform is no dataset."""
    with pytest.raises(ConfigError) as info:
        build({"_target_": "albumentations.HorizontalFlip"}, "dataset", kind=SegmentationDataset, trusted=False, split="val", transform=None)
    assert str(info.value) == (
        "dataset._target_: the stored config names 'albumentations.HorizontalFlip', which is not a SegmentationDataset "
        "of recallseg or its libraries; name it yourself on the command line for this run if you trust it"
    )


def test_an_untrusted_class_of_the_right_kind_from_another_package_is_refused_after_import():
    """Reached through a recallseg module, torch's Identity is an nn.Module, but not recallseg's or its libraries'."""
    from torch import nn

    with pytest.raises(ConfigError, match=re.escape("model._target_: the stored config names 'recallseg.models.builder.nn.Identity', which is not a Module of")):
        build({"_target_": "recallseg.models.builder.nn.Identity"}, "model", kind=nn.Module, trusted=False)


def test_a_model_factory_is_a_trusted_model_but_no_transform_or_dataset():
    """A stored transform entry naming smp.create_model (encoder_weights: imagenet) would download weights."""
    import segmentation_models_pytorch as smp
    from torch import nn

    check_trusted_object(smp.create_model, "segmentation_models_pytorch.create_model", "model._target_", nn.Module)
    for key, kind, name in [
        ("dataset.val_transform[0]._target_", transform_kinds(), "BasicTransform or BaseCompose"),
        ("dataset._target_", SegmentationDataset, "SegmentationDataset"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(f"{key}: the stored config names 'segmentation_models_pytorch.create_model', which is not a {name} of")):
            check_trusted_object(smp.create_model, "segmentation_models_pytorch.create_model", key, kind)
