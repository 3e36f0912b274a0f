"""evaluate.py never writes over the dataset it scores, and its report files are replaced whole.

``predictions.dir`` or the report folder that is, lies inside or holds the dataset is refused
before the model loads (and, on the command line, before Hydra makes the run directory). A
report file whose write fails keeps its previous version and leaves no partial file.
"""

import sys

import pytest

from conftest import CONFIG_DIR
from dataset_trees import make_folder
from disks import leftovers, writes_fail_beyond
from model_checkpoints import TINY_RUNTIME, composed_config
from recallseg.checkpoints.format import save_checkpoint
from recallseg.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from recallseg.errors import ConfigError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint without weights: the refusals come before a model could need them."""
    path = tmp_path_factory.mktemp("ckpt") / "config_only.pt"
    save_checkpoint({"config": composed_config(TINY_RUNTIME), "classes": list(SYNTHETIC_CLASSES), "model": {}}, path)
    return path


@pytest.fixture
def dataset(tmp_path):
    """A folder dataset and the bytes of every file in it."""
    root = tmp_path / "data"
    make_folder(root, frames={"val": 2})
    return root, {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def evaluate(out, *overrides):
    from hydra import compose, initialize_config_dir

    from recallseg.commands.evaluate import split_eval_arguments
    from recallseg.evaluation.score_checkpoint import evaluate_checkpoint

    own, stored = split_eval_arguments([f"output_dir={out}", *overrides])
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=own)
    return evaluate_checkpoint(cfg, stored)


@pytest.fixture
def never_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the outputs were checked")

    monkeypatch.setattr("recallseg.evaluation.score_checkpoint.model_from_checkpoint", refuse)
    monkeypatch.setattr("recallseg.evaluation.score_checkpoint.build_dataset", refuse)


@pytest.mark.parametrize("where, fmt", [("masks/val", "index"), ("images/val", "color"), ("", "index")])
def test_predictions_into_the_scored_dataset_are_refused(checkpoint, dataset, tmp_path, never_loads, where, fmt):
    root, files = dataset
    target = root / where if where else root
    relation = "is inside" if where else "is"
    with pytest.raises(ConfigError, match=rf"^predictions.dir: {target} {relation} dataset.root {root}, which this command reads"):
        evaluate(tmp_path / "eval", f"checkpoint={checkpoint}", "dataset=folder", f"dataset.root={root}",
                 "predictions.save=true", f"predictions.format={fmt}", f"predictions.dir={target}")  # fmt: skip
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files


def test_a_report_folder_inside_or_around_the_dataset_is_refused(checkpoint, dataset, tmp_path, never_loads):
    root, _ = dataset
    with pytest.raises(ConfigError, match=rf"^output_dir: {root / 'eval'} is inside dataset.root {root}"):
        evaluate(root / "eval", f"checkpoint={checkpoint}", "dataset=folder", f"dataset.root={root}")
    with pytest.raises(ConfigError, match=rf"^output_dir: {tmp_path} holds dataset.root {root}"):
        evaluate(tmp_path, f"checkpoint={checkpoint}", "dataset=folder", f"dataset.root={root}")


def test_the_command_refuses_before_hydra_makes_the_run_directory(checkpoint, dataset, tmp_path, monkeypatch, capsys):
    from recallseg.commands.evaluate import eval_main

    root, files = dataset
    common = ["evaluate.py", f"checkpoint={checkpoint}", "dataset=folder", f"dataset.root={root}"]
    for extra in (
        [f"hydra.run.dir={tmp_path / 'run'}", "predictions.save=true", f"predictions.dir={root / 'masks' / 'val'}"],
        [f"hydra.run.dir={root / 'run'}"],
    ):
        monkeypatch.setattr(sys, "argv", [*common, *extra])
        with pytest.raises(SystemExit) as stop:
            eval_main()
        assert stop.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"dataset.root {root}, which this command reads" in lines[0]
    assert not (tmp_path / "run").exists() and not (root / "run").exists()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files


def test_a_report_file_that_cannot_be_written_keeps_its_previous_version(tmp_path):
    import torch

    from recallseg.errors import OutputError
    from recallseg.evaluation.metrics import metrics_from_confusion
    from recallseg.evaluation.report import write_evaluation_report

    classes = ["road", "car", "sky"]
    matrix = torch.tensor([[50, 2, 1], [3, 40, 0], [0, 1, 60]])
    metrics = metrics_from_confusion(matrix, classes)
    files = write_evaluation_report(tmp_path, metrics, matrix.numpy(), classes, split="val")
    picture = files["confusion_matrix.png"].read_bytes()
    assert len(picture) > 4096
    with writes_fail_beyond(4096), pytest.raises(OutputError) as caught:
        write_evaluation_report(tmp_path, metrics, matrix.numpy(), classes, split="test")
    assert str(caught.value).startswith(f"cannot write {files['confusion_matrix.png']}: ")
    assert "(the previous confusion_matrix.png is unchanged)" in str(caught.value)
    assert files["confusion_matrix.png"].read_bytes() == picture and leftovers(tmp_path) == []
