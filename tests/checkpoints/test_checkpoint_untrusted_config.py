"""A checkpoint's stored config is data, for every command that reads one.

Each attack below edits one value of a real checkpoint's plain data and saves it with plain
``torch.save`` (so it still loads with ``weights_only=True``). Every command that reads a
checkpoint (evaluate, predict, export, resume) must refuse it in one line, exit 2, before it
creates a file, runs a pickle or reads an environment variable. A control edited the same way
with a harmless value is accepted, so a refusal is never an accident of the file format.
"""

from __future__ import annotations

import base64
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY_OVERRIDES
from recallseg.config.construct import build, transform_kinds
from recallseg.checkpoints.format import CheckpointError, load_checkpoint, save_checkpoint
from recallseg.checkpoints.stored_data import StoredDataError, escape_interpolations, read_stored_data, read_stored_value
from recallseg.errors import ConfigError

SECRET = "RECALLSEG_TEST_SECRET"
SECRET_VALUE = "s3cr3t-value-never-printed"


class _RunsAShellCommand:
    """A pickle that, when loaded without weights_only, writes its marker through os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"id > {self.marker}",)


def pickled_shell_command(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(_RunsAShellCommand(marker))).decode()


def attacks(marker: Path) -> dict:
    """name -> edit of the stored state. Each would create ``marker``, run code or read $SECRET."""
    opens = "${oc.create:{_target_: builtins.open, file: " + str(marker) + ", mode: w}}"
    unpickles = (
        "${oc.create:{_target_: torch.load, f: {_target_: io.BytesIO, _args_: [{_target_: base64.b64decode, s: '"
        + pickled_shell_command(marker) + "'}]}, weights_only: false}}"
    )
    return {
        "oc.create opens a file in a transform": lambda s: s["config"]["dataset"].update(
            {"val_transform": [{"_target_": "albumentations.HorizontalFlip", "p": opens}]}
        ),
        "oc.create unpickles into model.encoder_depth": lambda s: s["config"]["model"].update({"encoder_depth": unpickles}),
        "oc.create unpickles into dataset.noise": lambda s: s["config"]["dataset"].update({"noise": unpickles}),
        "oc.env reads the environment": lambda s: s["config"]["dataset"].update({"split": "${oc.env:" + SECRET + "}"}),
        "oc.decode": lambda s: s["config"]["dataset"].update({"split": "${oc.decode:'${oc.env:" + SECRET + "}'}"}),
        "oc.select": lambda s: s["config"]["dataset"].update({"split": "${oc.select:nothing,${oc.env:" + SECRET + "}}"}),
        "recallseg's own resolver": lambda s: s["config"]["model"].update({"channel_order": "${recallseg_help:dataset,{}}"}),
        "a plain interpolation in a nested key": lambda s: s["config"]["trainer"].update({"device": "${dataset.split}"}),
        "an interpolation in a class name": lambda s: s.update({"classes": ["${oc.env:" + SECRET + "}", *s["classes"][1:]]}),
        "_partial_ in the model": lambda s: s["config"]["model"].update({"_partial_": True}),
        "_args_ into the dataset": lambda s: s["config"]["dataset"].update({"_args_": ["val"]}),
        "_convert_ in a transform": lambda s: s["config"]["dataset"].update(
            {"val_transform": [{"_target_": "albumentations.HorizontalFlip", "_convert_": "object"}]}
        ),
        "_recursive_ in the model": lambda s: s["config"]["model"].update({"_recursive_": False}),
        "a hydra section": lambda s: s["config"].update({"hydra": {"run": {"dir": str(marker.parent / "elsewhere")}}}),
        "hydra.searchpath": lambda s: s["config"].update({"hydra": {"searchpath": [f"file://{marker.parent}"]}}),
        "classes not a list of names": lambda s: s.update({"classes": {"road": 0}}),
        "palette not colours": lambda s: s.update({"palette": ["red"] * len(s["classes"])}),
        "palette out of range": lambda s: s.update({"palette": [[0, 0, 999]] * len(s["classes"])}),
        "monitor not a metric": lambda s: s.update({"monitor": "${oc.env:" + SECRET + "}"}),
        "monitor unknown": lambda s: s.update({"monitor": "loss"}),
    }


# What each refusal must say, by attack: the key it names.
NAMED_KEY = {
    "oc.create opens a file in a transform": "config.dataset.val_transform[0].p",
    "oc.create unpickles into model.encoder_depth": "config.model.encoder_depth",
    "oc.create unpickles into dataset.noise": "config.dataset.noise",
    "oc.env reads the environment": "config.dataset.split",
    "oc.decode": "config.dataset.split",
    "oc.select": "config.dataset.split",
    "recallseg's own resolver": "config.model.channel_order",
    "a plain interpolation in a nested key": "config.trainer.device",
    "an interpolation in a class name": "classes[0]",
    "_partial_ in the model": "config.model._partial_",
    "_args_ into the dataset": "config.dataset._args_",
    "_convert_ in a transform": "config.dataset.val_transform[0]._convert_",
    "_recursive_ in the model": "config.model._recursive_",
    "a hydra section": "config.hydra",
    "hydra.searchpath": "config.hydra",
    "classes not a list of names": "classes",
    "palette not colours": "palette",
    "palette out of range": "palette",
    "monitor not a metric": "monitor",
    "monitor unknown": "monitor",
}


@pytest.fixture(scope="module")
def clean_checkpoint(tmp_path_factory) -> Path:
    """A real training checkpoint (model, optimizer, config, classes, palette, monitor)."""
    from recallseg.config.compose import compose_checked
    from recallseg.commands.train import run_training

    run = tmp_path_factory.mktemp("run")
    cfg = compose_checked("train", [*TINY_OVERRIDES, *SMALL_MODEL, "trainer.max_iters=1", "trainer.val_interval=1", f"output_dir={run}"])
    run_training(cfg)
    return run / "checkpoints" / "last.pt"


def edited(clean: Path, change, out: Path) -> Path:
    """``clean`` with ``change`` applied to its state, written with plain torch.save as an attacker would."""
    state = torch.load(clean, weights_only=True)
    change(state)
    torch.save(state, out)
    assert torch.load(out, weights_only=True)  # still plain data to torch.load
    return out


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv(SECRET, SECRET_VALUE)
    reads = []
    real = os.environ.__class__.__getitem__

    def spy(self, key):
        if key == SECRET:
            reads.append(key)
        return real(self, key)

    monkeypatch.setattr(os.environ.__class__, "__getitem__", spy)
    return reads


def resume_from(checkpoint: Path, tmp_path: Path, *typed: str) -> None:
    """``python train.py resume=<checkpoint> hydra.run.dir=<tmp_path>/resumed <typed>``: the training task, in-process."""
    from recallseg.config.compose import compose_checked
    from recallseg.commands.train import run_training

    typed = (f"resume={checkpoint}", f"output_dir={tmp_path / 'resumed'}", *typed)
    run_training(compose_checked("train", list(typed)), typed)


def run_command(command: str, checkpoint: Path, tmp_path: Path, monkeypatch) -> int:
    """Run one command that reads ``checkpoint`` in-process; its exit status."""
    if command == "evaluate":
        from recallseg.commands.evaluate import eval_main

        monkeypatch.setattr(sys, "argv", ["evaluate.py", f"checkpoint={checkpoint}", f"output_dir={tmp_path / 'eval'}"])
        with pytest.raises(SystemExit) as stop:
            eval_main()
        return stop.value.code
    if command == "predict":
        from recallseg.commands import predict

        images = tmp_path / "images"
        images.mkdir(exist_ok=True)
        import cv2

        cv2.imwrite(str(images / "a.png"), np.zeros((64, 64, 3), np.uint8))
        return predict.main([f"checkpoint={checkpoint}", f"input={images}", f"output={tmp_path / 'predicted'}", "device=cpu"])
    if command == "export":
        from recallseg.commands import export

        return export.main([f"checkpoint={checkpoint}", f"output={tmp_path / 'model.onnx'}", "verify=false"])
    if command == "resume":
        with pytest.raises(SystemExit) as stop:
            resume_from(checkpoint, tmp_path)
        return stop.value.code
    raise AssertionError(command)


# A network of 2.2 M parameters, so that each attack reads and writes a small file.
SMALL_MODEL = ["model.arch=Unet", "model.encoder_name=mobilenet_v2", "~model.encoder_output_stride", "+model.encoder_depth=3", "+model.decoder_channels=[16,8,8]"]
COMMANDS = ["evaluate", "predict", "export", "resume"]


def assert_refused(code: int, capsys, name: str, marker: Path, secret_reads: list) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert NAMED_KEY[name] in lines[0] and "the file was edited" in lines[0], lines[0]
    assert not marker.exists(), "a value of the stored config created a file"
    assert not marker.parent.joinpath("elsewhere").exists()
    assert SECRET_VALUE not in err and not secret_reads, "the stored config read the environment"
    return lines[0]


@pytest.mark.parametrize("name", list(NAMED_KEY))
def test_evaluate_refuses_every_form_of_code_in_a_stored_config(name, clean_checkpoint, tmp_path, monkeypatch, capsys, secret):
    marker = tmp_path / "marker"
    checkpoint = edited(clean_checkpoint, attacks(marker)[name], tmp_path / "tampered.pt")
    code = run_command("evaluate", checkpoint, tmp_path, monkeypatch)
    assert_refused(code, capsys, name, marker, secret)
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", ["oc.create opens a file in a transform", "oc.create unpickles into model.encoder_depth", "oc.env reads the environment", "_partial_ in the model"])
def test_every_command_that_reads_a_checkpoint_refuses_it(command, name, clean_checkpoint, tmp_path, monkeypatch, capsys, secret):
    marker = tmp_path / "marker"
    checkpoint = edited(clean_checkpoint, attacks(marker)[name], tmp_path / "tampered.pt")
    code = run_command(command, checkpoint, tmp_path, monkeypatch)
    assert_refused(code, capsys, name, marker, secret)
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "predicted").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_harmless_edit_made_the_same_way_is_accepted(command, clean_checkpoint, tmp_path, monkeypatch, capsys):
    """The control: the same edit path with a plain value; every command then does its work."""
    checkpoint = edited(clean_checkpoint, lambda s: s["config"]["dataset"].update({"noise": 3.5}), tmp_path / "edited.pt")
    assert load_checkpoint(checkpoint)["config"]["dataset"]["noise"] == 3.5
    if command == "evaluate":  # eval_main hands over to Hydra's app after its checks: run the task itself
        from recallseg.evaluation.score_checkpoint import evaluate_checkpoint
        from model_checkpoints import eval_config

        metrics = evaluate_checkpoint(eval_config(checkpoint, tmp_path))
        assert (tmp_path / "eval" / "metrics.json").is_file() and metrics["mIoU"] == metrics["mIoU"]
        return
    code = run_command(command, checkpoint, tmp_path, monkeypatch) if command != "resume" else None
    if command == "resume":  # the run continues with its stored config, the edited noise included
        resume_from(checkpoint, tmp_path, "trainer.max_iters=2")
        resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
        assert resumed["iteration"] == 2 and resumed["config"]["dataset"]["noise"] == 3.5
        return
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / ("model.onnx" if command == "export" else "predicted")).exists()


def test_a_literal_dollar_brace_in_a_stored_string_stays_text(clean_checkpoint, tmp_path, monkeypatch, secret):
    """A ``${`` that was text in the run is stored escaped and read back as the same text, never resolved."""
    state = load_checkpoint(clean_checkpoint)
    literal = "${oc.env:" + SECRET + "}"
    state["config"]["dataset"]["split"] = literal
    save_checkpoint(state, tmp_path / "literal.pt")
    raw = torch.load(tmp_path / "literal.pt", weights_only=True)
    assert raw["config"]["dataset"]["split"] == "\\" + literal  # stored escaped
    assert load_checkpoint(tmp_path / "literal.pt")["config"]["dataset"]["split"] == literal
    from recallseg.checkpoints.stored_config import checkpoint_config

    _, config, _ = checkpoint_config(tmp_path / "literal.pt", ["dataset.noise=0.5"])  # the overrides' resolution keeps it text
    assert config["dataset"]["split"] == literal and config["dataset"]["noise"] == 0.5
    assert not secret


@pytest.mark.parametrize("text", ["plain", "${x}", "a\\${x}", "\\\\${y}z", "p/${oc.env:HOME}/q${", "x\\", "$${", "${a}${b}"])
def test_the_escape_is_the_one_omegaconf_reads_back_as_the_same_text(text):
    stored = escape_interpolations(text)
    assert OmegaConf.to_container(OmegaConf.create({"k": stored}), resolve=True)["k"] == text
    assert read_stored_value(stored, "k", "file") == text


@pytest.mark.parametrize("stored", ["${x}", "\\\\${x}", "a${oc.env:HOME}", "\\\\\\\\${x}"])
def test_an_unescaped_interpolation_is_refused_whatever_backslashes_come_before(stored):
    with pytest.raises(Exception, match="holds the interpolation"):
        read_stored_value(stored, "config.k", "file.pt")


def test_the_user_may_still_type_interpolations_when_evaluating(clean_checkpoint, monkeypatch):
    """The command line stays the user's: an interpolation they type is resolved as Hydra users expect."""
    from recallseg.checkpoints.stored_config import checkpoint_config

    path = clean_checkpoint
    monkeypatch.setenv("MY_SPLIT", "test")
    _, config, _ = checkpoint_config(path, ["dataset.split=${oc.env:MY_SPLIT}", "+dataset.note=${dataset.height}"])
    assert config["dataset"]["split"] == "test" and config["dataset"]["note"] == config["dataset"]["height"] == 64


def test_building_a_stored_section_never_resolves_what_it_hands_the_constructor(monkeypatch, secret):
    """Defence in depth: even past the load check, a stored section is called as checked, not resolved."""
    section = {"_target_": "albumentations.HorizontalFlip", "p": "${oc.env:" + SECRET + "}"}
    with pytest.raises(ConfigError) as info:
        build(section, "dataset.val_transform[0]", kind=transform_kinds(), trusted=False)
    assert "${oc.env:" + SECRET + "}" in str(info.value) and SECRET_VALUE not in str(info.value)
    assert not secret
    with pytest.raises(ConfigError, match=r"dataset.val_transform\[0\]._partial_: the stored config uses a Hydra key"):
        build({"_target_": "albumentations.HorizontalFlip", "_partial_": True}, "dataset.val_transform[0]", kind=transform_kinds(), trusted=False)
    nested = {"_target_": "albumentations.OneOf", "transforms": [{"_target_": "albumentations.HorizontalFlip", "_args_": [1]}]}
    with pytest.raises(ConfigError, match=r"transforms\[0\]._args_"):
        build(nested, "dataset.val_transform[0]", kind=transform_kinds(), trusted=False)
    built = build({"_target_": "albumentations.OneOf", "transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 1.0}]}, "t", kind=transform_kinds(), trusted=False)
    assert type(built.transforms[0]).__name__ == "HorizontalFlip" and built.transforms[0].p == 1.0


def test_a_checkpoint_with_a_tampered_iteration_or_score_is_refused(clean_checkpoint, tmp_path):
    path = clean_checkpoint
    for key, value in (("iteration", -1), ("iteration", "7"), ("best_score", float("nan")), ("config", ["not", "a", "mapping"])):
        state = torch.load(path, weights_only=True)
        state[key] = value
        torch.save(state, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=f"bad.pt: {key}: "):
            load_checkpoint(tmp_path / "bad.pt")


def test_a_checkpoint_naming_a_class_at_its_former_module_reads_it_at_its_present_one(clean_checkpoint, tmp_path):
    def old_paths(state):
        state["config"]["scheduler"]["_target_"] = "recallseg.engine.optim.PolySchedule"
        state["config"]["dataset"]["val_transform"] = [{"_target_": "recallseg.data.transforms.RandomScaleCrop", "height": 64, "width": 64}]

    config = load_checkpoint(edited(clean_checkpoint, old_paths, tmp_path / "old.pt"))["config"]
    assert config["scheduler"]["_target_"] == "recallseg.training.optim.PolySchedule"
    assert config["dataset"]["val_transform"][0]["_target_"] == "recallseg.pipeline.transforms.RandomScaleCrop"
    from recallseg.pipeline.transforms import RandomScaleCrop  # noqa: F401  (the present path exists)
    from recallseg.training.optim import PolySchedule  # noqa: F401


def test_the_run_record_is_plain_data_stored_escaped_and_refused_when_edited_into_more(clean_checkpoint, tmp_path, secret):
    """A training checkpoint holds its run's record; a literal ``${`` in it (a command line's) stays text,
    and a record edited to hold an interpolation, a tensor or no mapping is refused, naming the key."""
    state = load_checkpoint(clean_checkpoint)
    assert state["run"]["kind"] == "train" and state["run"]["versions"]["torch"] == torch.__version__
    literal = "train.py hydra.run.dir=out/${oc.env:" + SECRET + "}"
    state["run"]["command"] = literal
    save_checkpoint(state, tmp_path / "literal.pt")
    assert torch.load(tmp_path / "literal.pt", weights_only=True)["run"]["command"] == literal.replace("${", "\\${")
    assert load_checkpoint(tmp_path / "literal.pt")["run"] == state["run"]
    for value, message in (
        ({"command": "${oc.env:" + SECRET + "}"}, r"run.command: holds the interpolation"),
        ({"end": {"peak": torch.ones(1)}}, r"run.end.peak: holds a Tensor, where a run record holds only"),
        (["train"], r"run: is a list, not a mapping"),
    ):
        with pytest.raises(StoredDataError, match=f"bad.pt: {message}"):  # what load_checkpoint raises as a CheckpointError
            read_stored_data({**state, "run": value}, "bad.pt")
    assert not secret


# -- a resumed run trains with its stored config, built as data --------------------------------


def test_a_literal_dollar_brace_stays_text_through_a_resumed_run(clean_checkpoint, tmp_path, secret):
    """The resumed run's config is the stored one: its text reaches the trainer, the run's record and the
    new checkpoint as text, never resolved on the way (OmegaConf meets it escaped)."""
    state = load_checkpoint(clean_checkpoint)
    literal = str(tmp_path / ("cache ${oc.env:" + SECRET + "}"))
    state["config"]["paths"]["cache_dir"] = literal
    save_checkpoint(state, tmp_path / "literal.pt")
    resume_from(tmp_path / "literal.pt", tmp_path, "trainer.max_iters=2")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert resumed["iteration"] == 2 and resumed["config"]["paths"]["cache_dir"] == literal
    assert not secret


@pytest.mark.parametrize("key, target", [
    ("optimizer", "planted_module.Optimizer"),  # refused as text: never imported
    ("scheduler", "recallseg.atomic_files.atomic_write"),  # a function of recallseg, not a schedule
    ("loss", "planted_module.Loss"),
    ("model", "planted_module.Network"),
])  # fmt: skip
def test_a_resumed_run_builds_only_what_a_stored_config_may_name(key, target, clean_checkpoint, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "it_ran"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nOptimizer = Loss = Network = object\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "planted_module", raising=False)
    edit = (lambda s: s["config"]["loss"].update({"_target_": "recallseg.losses.combined.CombinedLoss", "terms": [{"name": "ce", "_target_": target}]})) if key == "loss" else (
        lambda s: s["config"][key].update({"_target_": target}))  # a combined loss's term: a nested target
    checkpoint = edited(clean_checkpoint, edit, tmp_path / "tampered.pt")
    with pytest.raises(SystemExit) as stop:
        resume_from(checkpoint, tmp_path, "trainer.max_iters=2")
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"{key}." in lines[0] and repr(target) in lines[0], lines[0]
    assert not marker.exists(), "a target of the stored config was imported"
    assert not (tmp_path / "resumed" / "checkpoints").exists()
