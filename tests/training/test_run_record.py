"""Every run records the code, versions, machine and data that made it: a tiny in-process run on
a folder dataset, its metrics.json ``run`` section, its checkpoints and train.log; evaluate.py's
record, and its one-line note when the labels it scores are not the ones training saw."""

import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import recallseg
from conftest import CONFIG_DIR, REPO
from dataset_trees import make_folder, write_array
from model_checkpoints import TINY_RUNTIME, eval_config
from recallseg.checkpoints.format import load_checkpoint
from recallseg.config.schema import validate_train_config
from recallseg.evaluation.score_checkpoint import evaluate_checkpoint
from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.data_record import label_fingerprint
from recallseg.training.tensorboard_images import ValidationPictures
from recallseg.training.trainer import Trainer

NOTE = "this evaluation differs from the checkpoint's training run"
SMALL_MODEL = ["model.arch=Unet", "model.encoder_name=mobilenet_v2", "~model.encoder_output_stride", "+model.encoder_depth=3", "+model.decoder_channels=[16,8,8]"]


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    make_folder(root / "data", frames={"train": 4, "val": 2}, size=(64, 64))
    overrides = [*TINY_RUNTIME, "dataset=folder", f"dataset.root={root / 'data'}", "dataset.train_transform=null", "loss=ce", *SMALL_MODEL, f"output_dir={root / 'run'}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.create(validate_train_config(compose("train", overrides=overrides)))
    logged, logger = Lines(), logging.getLogger("recallseg")
    level = logger.level
    logger.addHandler(logged)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:  # TensorBoard's pictures take longer than this run and say nothing of it
            patch.setattr(ValidationPictures, "log", lambda *args, **kwargs: None)
            Trainer(cfg).fit()
    finally:
        logger.removeHandler(logged)
        logger.setLevel(level)
    return root, cfg, logged.lines


def fingerprint(cfg, split):
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    return label_fingerprint(build_dataset(dataset_cfg, split, transform=None), dataset_cfg, split)


def test_metrics_json_and_every_checkpoint_hold_the_run_with_real_values(run):
    root, cfg, lines = run
    record = json.loads((root / "run" / "metrics.json").read_text())["run"]
    assert record["kind"] == "train" and record["command"] == shlex.join(sys.orig_argv)
    assert record["code"]["recallseg"] == recallseg.__version__
    if (REPO / ".git").exists() and subprocess.run(["git", "--version"], capture_output=True).returncode == 0:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert record["code"]["git_commit"] == head and isinstance(record["code"]["git_dirty"], bool)
    versions = record["versions"]
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__ and versions["python"] == platform.python_version()
    assert all(versions[name] not in (None, "unknown") for name in ("torchvision", "segmentation-models-pytorch", "albumentations", "hydra-core", "omegaconf", "opencv"))
    machine = record["machine"]
    assert machine["cpu_cores"] == os.cpu_count() and machine["cpu"] not in ("", "unknown")
    assert (machine["device"], machine["processes"], machine["precision"], machine["channels_last"]) == ("cpu", 1, "float32", False)
    data = record["data"]
    assert data["dataset"] == "recallseg.data.folder.FolderDataset" and data["root"] == str((root / "data").resolve())
    assert {name: split["images"] for name, split in data["splits"].items()} == {"train": 4, "val": 2}
    assert data["splits"]["val"]["label_fingerprint"] == fingerprint(cfg, "val") != data["splits"]["train"]["label_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{16}", record["config_hash"])
    end = record.pop("end")
    assert end["iterations"] == 2 and end["wall_seconds"] >= end["training_seconds"] > 0 and "cuda_max_allocated_mib" not in end
    assert end["images_per_second"] == pytest.approx(2 * end["iterations_per_second"], rel=1e-2) and end["cpu_peak_rss_mib"] > 100
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(root / "run" / "checkpoints" / name)["run"] == record, name
    shown = "\n".join(lines)  # the block train.log shows
    for text in (f"torch {torch.__version__}", f"labels {data['splits']['val']['label_fingerprint']}", record["config_hash"], "run took", "it/s"):
        assert text in shown, text


def test_evaluate_records_both_runs_and_says_in_one_line_when_a_label_file_changed(run, tmp_path, caplog):
    root, cfg, _ = run
    checkpoint = root / "run" / "checkpoints" / "best.pt"
    trained = load_checkpoint(checkpoint)["run"]
    label = sorted((root / "data" / "masks" / "val").glob("*.png"))[0]
    kept, times = label.read_bytes(), os.stat(label)
    with caplog.at_level(logging.INFO, logger="recallseg"):
        evaluate_checkpoint(eval_config(checkpoint, tmp_path / "same"))
    same = json.loads((tmp_path / "same" / "eval" / "metrics.json").read_text())
    assert same["training_run"] == trained and same["run"]["kind"] == "evaluate" and same["run"]["versions"] == trained["versions"]
    assert same["run"]["data"]["splits"] == {"val": trained["data"]["splits"]["val"]}  # nothing changed: the same fingerprint
    assert not [r for r in caplog.records if NOTE in r.getMessage()]
    caplog.clear()
    try:
        write_array(label, np.zeros((64, 64), np.uint8))  # relabelled: every pixel background
        with caplog.at_level(logging.INFO, logger="recallseg"):
            evaluate_checkpoint(eval_config(checkpoint, tmp_path / "changed"))
        changed = json.loads((tmp_path / "changed" / "eval" / "metrics.json").read_text())["run"]["data"]["splits"]["val"]["label_fingerprint"]
        assert changed != trained["data"]["splits"]["val"]["label_fingerprint"]
        assert fingerprint(cfg, "train") == trained["data"]["splits"]["train"]["label_fingerprint"]  # the untouched split keeps its own
    finally:
        label.write_bytes(kept)
        os.utime(label, ns=(times.st_atime_ns, times.st_mtime_ns))
    notes = [r for r in caplog.records if NOTE in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO and "\n" not in notes[0].getMessage()
    assert f"val label fingerprint {trained['data']['splits']['val']['label_fingerprint']} -> {changed}" in notes[0].getMessage()
