"""evaluate.py's overrides of a checkpoint's stored config: plain keys, whole groups, class names."""

import pytest

from dataset_trees import make_folder
from model_checkpoints import TINY_RUNTIME, write_checkpoint
from recallseg.checkpoints.stored_config import checkpoint_config
from recallseg.evaluation.score_checkpoint import evaluate_checkpoint
from recallseg.errors import ConfigError, UserError
from model_checkpoints import eval_config

FOLDER_CLASSES = ["background", "road", "car"]


@pytest.fixture
def folder_checkpoint(tmp_path):
    make_folder(tmp_path / "trained_on", frames={"train": 2, "val": 4})
    make_folder(tmp_path / "other", frames={"train": 1, "val": 3}, seed=1)
    overrides = [*TINY_RUNTIME, "dataset=folder", f"dataset.root={tmp_path / 'trained_on'}"]
    return write_checkpoint(tmp_path / "folder.pt", FOLDER_CLASSES, overrides)


def test_a_stored_key_is_overridden_by_its_plain_name(folder_checkpoint, tmp_path):
    metrics = evaluate_checkpoint(eval_config(folder_checkpoint, tmp_path), [f"dataset.root={tmp_path / 'other'}"])
    assert sum(row["pixels"] for row in metrics["per_class"].values()) > 0
    _, config, _ = checkpoint_config(folder_checkpoint, [f"dataset.root={tmp_path / 'other'}", "dataset.split=train"])
    assert config["dataset"]["root"] == str(tmp_path / "other") and config["dataset"]["split"] == "train"


def test_an_unknown_stored_key_names_the_nearest(folder_checkpoint):
    with pytest.raises(ConfigError) as info:
        checkpoint_config(folder_checkpoint, ["dataset.rot=/x"])
    assert info.value.key == "dataset.rot" and "dataset.root" in str(info.value)


def test_a_group_replaces_the_stored_section_without_merging(folder_checkpoint, tmp_path):
    _, config, _ = checkpoint_config(folder_checkpoint, ["dataset=synthetic", "dataset.num_val=2"])
    assert config["dataset"]["_target_"] == "recallseg.data.SyntheticStreets"
    assert "root" not in config["dataset"] and "classes_file" not in config["dataset"]  # no folder keys left behind
    assert config["dataset"]["num_val"] == 2 and config["dataset"]["height"] == 96  # the group's defaults, then the key


def test_other_class_names_are_refused_with_how_to_map_them(folder_checkpoint, tmp_path):
    (tmp_path / "other" / "classes.yaml").write_text("classes: [background, road, truck]\n")
    with pytest.raises(UserError) as info:
        evaluate_checkpoint(eval_config(folder_checkpoint, tmp_path), [f"dataset.root={tmp_path / 'other'}"])
    message = str(info.value)
    assert "'car' vs 'truck'" in message and "dataset.class_set=synthia16" in message


def test_a_sweep_over_stored_keys_is_refused(folder_checkpoint):
    with pytest.raises(ConfigError, match="sweeps"):
        checkpoint_config(folder_checkpoint, ["dataset.split=val,test"])
