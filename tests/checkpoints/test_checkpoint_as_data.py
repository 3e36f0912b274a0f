"""A checkpoint's config is data: nothing it names outside recallseg, smp and albumentations is
imported or called, nested entries included, and its weights are never downloaded."""

import copy
import sys
import textwrap

import pytest

from conftest import TINY_OVERRIDES
from model_checkpoints import eval_config, write_checkpoint
from recallseg.data.synthetic import CLASSES
from recallseg.evaluation.score_checkpoint import evaluate_checkpoint
from recallseg.errors import UserError



@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A module that leaves a file behind when imported or called."""
    marker = tmp_path / "it_ran"
    (tmp_path / "planted_module.py").write_text(textwrap.dedent(f'''
        open({str(marker)!r}, "w").write("imported")
        def run(*args, **kwargs):
            open({str(marker)!r}, "w").write("called")
        class Thing:
            def __init__(self, *args, **kwargs):
                run()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("planted_module", None)
    return marker


def tampered(tmp_path, change):
    import torch

    path = write_checkpoint(tmp_path / "clean.pt", CLASSES, TINY_OVERRIDES)
    state = torch.load(path, weights_only=True)
    config = copy.deepcopy(state["config"])
    change(config)
    state["config"] = config
    torch.save(state, tmp_path / "tampered.pt")
    return tmp_path / "tampered.pt"


CHANGES = {
    "dataset class": lambda c: c["dataset"].update({"_target_": "planted_module.Thing"}),
    "os.system through a recallseg module": lambda c: c["dataset"].update({"_target_": "recallseg.commands.train.sys.exit"}),
    "builtins": lambda c: c["model"].update({"_target_": "builtins.exec"}),
    "nested in a transform": lambda c: c["dataset"].update(
        {"val_transform": [{"_target_": "albumentations.OneOf", "transforms": [{"_target_": "planted_module.Thing"}]}]}
    ),
    "nested in model options": lambda c: c["model"].update({"aux_params": {"_target_": "planted_module.run"}}),
    "a recallseg function that writes": lambda c: c["dataset"].update(
        {"val_transform": [{"_target_": "recallseg.training.run_directory.record_config", "run_dir": "/tmp/x", "cfg": {}}]}
    ),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_foreign_targets_in_a_stored_config_are_refused_without_running(name, planted, tmp_path):
    checkpoint = tampered(tmp_path, CHANGES[name])
    with pytest.raises(UserError) as info:
        evaluate_checkpoint(eval_config(checkpoint, tmp_path))
    assert "never imports" in str(info.value) or "is not a" in str(info.value)
    assert not planted.exists(), "a name from the checkpoint was imported or called"
    assert "planted_module" not in sys.modules
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_a_stored_imports_list_is_never_imported(planted, tmp_path):
    checkpoint = tampered(tmp_path, lambda c: c.update({"imports": ["planted_module", "this"]}))
    sys.modules.pop("this", None)
    metrics = evaluate_checkpoint(eval_config(checkpoint, tmp_path))
    assert 0 <= metrics["mIoU"] <= 1
    assert not planted.exists() and "planted_module" not in sys.modules and "this" not in sys.modules


def test_the_user_may_name_their_own_class_for_this_run(planted, tmp_path):
    checkpoint = tampered(tmp_path, CHANGES["dataset class"])
    # Theirs to trust: no guard refuses it, it is imported and called as the dataset (and, being no
    # dataset, fails where the dataset is first used).
    with pytest.raises(AttributeError, match="^'Thing' object has no attribute 'classes'$"):
        evaluate_checkpoint(eval_config(checkpoint, tmp_path), ["dataset._target_=planted_module.Thing"])
    assert planted.read_text() == "called"


@pytest.mark.slow
def test_stored_weights_are_never_downloaded(tmp_path, monkeypatch):
    from recallseg.models import builder

    seen = []
    real = builder.build

    def spy(section, *args, **kwargs):
        seen.append(dict(section))
        return real({**section, "encoder_weights": None}, *args, **kwargs)

    checkpoint = tampered(tmp_path, lambda c: c["model"].update({"encoder_weights": "imagenet"}))
    monkeypatch.setattr(builder, "build", spy)
    evaluate_checkpoint(eval_config(checkpoint, tmp_path))
    assert seen and all(section["encoder_weights"] is None for section in seen)
