"""--help of every command: config groups with their choices and the options with the comments
their config files give them (read from the files, so the help cannot drift)."""

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONFIG_DIR, run_entry_point
from recallseg.config.help import documented_options, options_help
from recallseg.commands import benchmark, compare_losses


def test_options_and_their_comments_are_read_from_yaml():
    text = "# A file.\ndefaults:\n  - x: y\nalpha: 1  # the first\n# about beta,\n# on two lines\nbeta:\n  gamma: [1, 2]   # nested\n  delta: 3\nhydra:\n  run: {dir: x}\n"
    header, options = documented_options(text, "loss")
    assert header == "A file."
    assert options == [("loss.alpha", "1", "the first"), ("loss.beta", "", "about beta, on two lines"), ("loss.beta.gamma", "[1, 2]", "nested"), ("loss.beta.delta", "3", "")]


def test_the_items_of_a_block_list_are_listed_as_their_overrides_name_them():
    text = "steps:  # in order\n  - {x: 1}\n  - 2  # two\n  - y: 3\n    z: 4\nafter: 5\nnested:\n  inner:\n    - a\n"
    _, options = documented_options(text, "d")
    assert options == [
        ("d.steps", "", "in order"), ("d.steps.0", "{x: 1}", ""), ("d.steps.1", "2", "two"), ("d.steps.2", "y: 3", ""),
        ("d.after", "5", ""), ("d.nested", "", ""), ("d.nested.inner", "", ""), ("d.nested.inner.0", "a", ""),
    ]  # fmt: skip


def test_the_folder_dataset_help_shows_every_key_its_transforms_and_the_size_formats():
    text = options_help(str(CONFIG_DIR), "train", {"dataset": "folder"})
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        dataset = compose("train", overrides=["dataset=folder"]).dataset
    for key in dataset:
        if key != "_target_":
            assert f"\n  dataset.{key}=" in text, key
    for i in range(len(dataset.train_transform)):
        assert f"\n  dataset.train_transform.{i}={{_target_: " in text, i
    lines = {line.split("=", 1)[0].strip(): line for line in text.splitlines() if line.startswith("  dataset.")}
    assert "[height, width]" in lines["dataset.resize"] and "e.g. dataset.resize=[" in lines["dataset.resize"]
    assert "[height, width]" in lines["dataset.crop"] and "e.g. dataset.crop=[" in lines["dataset.crop"]
    assert "null: the training images' own size" in lines["dataset.crop"]
    assert "crops to dataset.crop" in lines["dataset.train_transform"]


def test_the_options_follow_the_chosen_group():
    text = options_help(str(CONFIG_DIR), "train", {"loss": "focal", "trainer": "default", "hydra/help": "recallseg"})
    assert "loss/focal.yaml: Focal loss" in text and "loss.gamma=2.0" in text and "loss.statistics" not in text
    amp = next(line for line in (CONFIG_DIR / "trainer" / "default.yaml").read_text().splitlines() if line.startswith("amp:"))
    assert "trainer.amp=auto" in text and amp.split("# ", 1)[1] in text  # the file's own words


@pytest.mark.parametrize("script, expected", [
    ("train.py", ["loss: ce, class_balanced", "dataset: cityscapes, folder, synthetic", "trainer.max_iters=400", "loss.kernel=torch", "trainer.device=auto             auto | cpu | cuda"]),
    ("evaluate.py", ["checkpoint=???", "inference.mode=whole", "whole | slide", "predictions.format=color"]),
    ("scripts/class_stats.py", ["split=null", "null: the dataset's train_split", "dataset: cityscapes"]),
    ("scripts/check_data.py", ["num_workers=2", "dataset: cityscapes", "(now: folder)", "dataset.check=true", "dataset.crop=null"]),
])  # fmt: skip
@pytest.mark.slow
def test_hydra_commands_help(script, expected):
    out = run_entry_point(script, "--help").stdout
    for text in expected:
        assert text in out, text
    assert "powered by Hydra" not in out


def test_argparse_tools_answer_help(capsys):
    for main in (compare_losses.main, benchmark.main):
        with pytest.raises(SystemExit) as exit:
            main(["--help"])
        assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "--losses" in out and "--summarize" in out and "SECTION" in out and "inference" in out


def test_the_protocol_group_shows_what_it_sets_for_the_chosen_loss():
    choices = {"loss": "focal", "protocol": "paper", "loss_protocol@loss": "paper_focal"}
    text = options_help(str(CONFIG_DIR), "train", choices)
    assert "loss_protocol: paper_class_balanced, paper_focal" in text and "now: paper_focal)" in text
    assert "loss_protocol/paper_focal.yaml" in text and "  loss.gamma=1.0" in text  # under loss., not loss_protocol@loss.
    plain = options_help(str(CONFIG_DIR), "train", {**choices, "protocol": "recallseg", "loss_protocol@loss": "recallseg_focal"})
    assert "now: none)" in plain and "loss_protocol/" not in plain.split("== Options")[1]
